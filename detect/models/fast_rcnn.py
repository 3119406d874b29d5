"""Fast R-CNN (Girshick, ICCV 2015) on a project backbone, with proposals from selective search,
a file, or a learned RPN (Faster R-CNN mode).

Shape shorthand (see :mod:`detect.models.roi_heads` for the head's):
    B  images, each Tensor[3, S, S] float RGB in [0, 1] (the model normalises)
    P  proposals of one image, xyxy pixels of the S x S input
    C  channels of the RoI feature map, stride ``feature_stride`` (16 by default)
    K  object classes; background is class 0 inside the model only

Contract (as every detector here, see docs/ARCHITECTURE.md):
    training: ``model(images, targets) -> {"loss_classifier", "loss_box_reg"}`` (+ the RPN's
        ``loss_objectness`` and ``loss_rpn_box_reg`` when ``proposals == "rpn"``). Targets are
        the dataset's dicts (``boxes`` Tensor[G, 4], ``labels`` Tensor[G] 0-based); with
        precomputed proposals each target also carries ``proposals`` Tensor[P, 4] in input
        pixels (see :mod:`detect.data.proposal_files`), or they come as ``proposals=list[Tensor]``.
    eval: ``model(images, proposals=None) -> list[{"boxes", "scores", "labels"}]`` with
        0-based labels in input pixels. Without ``proposals`` a selective-search model runs
        selective search on each image itself (CPU, ~0.3 s for 224 px), an RPN model uses its
        RPN, and a ``file`` model raises: it has no way to make proposals for a new image.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import RoIAlign, RoIPool, clip_boxes_to_image, remove_small_boxes

from detect.config import FastRCNNConfig, ModelConfig, Preprocess
from detect.models.backbones import build_config_backbone
from detect.models.context import ImageContext
from detect.models.selective_search import selective_search_tensor
from detect.models.roi_mean import roi_mean_pool
from detect.models.roi_heads import (
    BOX_CODER_WEIGHTS,
    ConvHead,
    FastRCNNPredictor,
    TwoFCHead,
    add_gt_proposals,
    fast_rcnn_loss,
    postprocess_detections,
    sample_rois_per_image,
)
from detect.models.rpn import build_rpn, run_rpn

PROPOSAL_SOURCES = ("rpn", "selective_search", "file")
ROI_OPS = ("roi_pool", "roi_align")


class FastRCNN(nn.Module):
    """Backbone feature map -> RoI pooling of each proposal -> two FC layers -> K + 1 class
    scores and class-specific boxes.

    Args:
        backbone: module mapping Tensor[B, 3, S, S] (normalised) to a list (or dict) of feature
            maps, with ``channels`` and ``strides`` lists describing them.
        num_classes: K, object classes without background.
        cfg: the Fast R-CNN settings (:class:`detect.config.FastRCNNConfig`: proposal source,
            RoI op and size, feature stride, head, RoI sampling (paper: 64 per image, 25%, 0.5,
            [0.1, 0.5)), the selective search run at inference without proposals, RPN anchors).
        mean, std: normalisation of the [0, 1] RGB input (the backbone's pretraining values).
        imgsz: S, the input side (sizes the RPN anchors).
        score_thresh, nms_thresh, max_det: inference postprocessing (per-class NMS), read at
            every forward (:func:`detect.models.build.set_postprocess` changes them).
    """

    spec_name = "fast_rcnn"  # its row in detect.models.specs.MODEL_SPECS

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        cfg: Optional[FastRCNNConfig] = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        imgsz: int = 320,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        max_det: int = 300,
        context: str = "none",
        context_loss: float = 0.0,
        context_pool: str = "image",
    ) -> None:
        super().__init__()
        cfg = cfg or FastRCNNConfig()
        proposals, roi_op, roi_size, head = cfg.proposals, cfg.roi_op, cfg.roi_size, cfg.head
        feature_stride, fc_dim, roi_channels = cfg.feature_stride, cfg.fc_dim, cfg.roi_channels
        if proposals not in PROPOSAL_SOURCES:
            raise ValueError(f"proposals={proposals!r}: expected one of {PROPOSAL_SOURCES}")
        if roi_op not in ROI_OPS:
            raise ValueError(f"roi_op={roi_op!r}: expected one of {ROI_OPS}")
        if head not in ("fc", "conv"):
            raise ValueError(f"head={head!r}: expected 'fc' or 'conv'")
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: a detector needs at least one object class")
        strides = list(getattr(backbone, "strides", []))
        channels = list(getattr(backbone, "channels", []))
        if not strides or len(strides) != len(channels):
            raise ValueError("the backbone must report matching `channels` and `strides` lists of its feature maps")
        if feature_stride not in strides:
            raise ValueError(f"feature_stride={feature_stride} is not among the backbone's strides {strides}")
        self.backbone = backbone
        self.feature_index = strides.index(feature_stride)
        self.feature_stride = feature_stride
        c = channels[self.feature_index]
        if roi_channels and c > roi_channels:
            self.reduce: nn.Module = nn.Sequential(nn.Conv2d(c, roi_channels, 1), nn.ReLU(inplace=True))
            c = roi_channels
        else:
            self.reduce = nn.Identity()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

        self.proposal_source = proposals
        self.rpn = build_rpn(c, imgsz, cfg.rpn_anchor_fractions, cfg.rpn_aspect_ratios) if proposals == "rpn" else None
        scale = 1.0 / feature_stride
        if roi_op == "roi_pool":
            self.roi_pool: nn.Module = RoIPool((roi_size, roi_size), spatial_scale=scale)
        else:
            self.roi_pool = RoIAlign((roi_size, roi_size), spatial_scale=scale, sampling_ratio=2, aligned=True)
        self.box_head: nn.Module = TwoFCHead(c, roi_size, fc_dim) if head == "fc" else ConvHead(c, min(fc_dim, 256))
        # The deepest backbone map (stride 32: with EfficientNet-Lite's conv head, the 1280
        # channels its ImageNet classifier reads): pooled per RoI ("semantic") it joins the
        # classifier's input; pooled over the whole image ("context") it adds one logit vector
        # per image to all of that image's RoIs.
        semantic = cfg.semantic
        deep = semantic or context != "none"
        self.semantic_index = len(strides) - 1 if deep else -1  # may be the RoI map itself (feature_stride 32)
        c_sem = channels[self.semantic_index] if self.semantic_index >= 0 else 0
        self.semantic = bool(semantic)
        self.context = ImageContext(c_sem, num_classes, context) if context != "none" else None
        self.context_loss = float(context_loss)
        self.context_pool = context_pool  # "image" or "box" (detect/models/context.py); read at every call
        self.predictor = FastRCNNPredictor(self.box_head.out_dim, num_classes, c_sem if semantic else 0)
        self.box_coder = BoxCoder(BOX_CODER_WEIGHTS)
        self.num_classes = num_classes
        self.rois_per_image, self.fg_fraction, self.fg_iou, self.bg_iou = cfg.rois_per_image, cfg.fg_fraction, cfg.fg_iou, tuple(cfg.bg_iou)
        self.score_thresh, self.nms_thresh, self.max_det = score_thresh, nms_thresh, max_det
        self.ss_mode, self.ss_max, self.ss_resize = cfg.ss_mode, cfg.ss_max, cfg.ss_resize

    # ------------------------------------------------------------------------------ forward
    def forward(
        self,
        images: Tensor,
        targets: Optional[list[dict[str, Tensor]]] = None,
        proposals: Optional[list[Tensor]] = None,
    ) -> Any:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images Tensor[B, 3, S, S], got shape {tuple(images.shape)}")
        if self.training and targets is None:
            raise ValueError("training needs targets (list of dicts with 'boxes' and 'labels')")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        feature, semantic = self._feature(images)  # (B, C, S/stride, S/stride), (B, C32, S/32, S/32) or None
        losses: dict[str, Tensor] = {}
        if self.rpn is not None and proposals is None:
            props, losses = run_rpn(self.rpn, images, feature, targets if self.training else None)
        else:
            props = self._given_proposals(images, targets, proposals)
        props = [self._clean(p.detach().to(feature.device, torch.float32), size) for p in props]
        ctx = self.context(semantic) if self.context is not None else None  # (B, K+1) image-level logits
        # the deepest map's real stride (an input not divisible by 32 rounds the map's size up)
        sem_stride = size[1] / semantic.shape[-1] if semantic is not None else 0.0
        if self.training:
            losses.update(self._train_head(feature, (semantic, sem_stride, ctx), props, targets))
            if ctx is not None and self.context_loss > 0:
                losses["loss_context"] = self.context_loss * self.context.loss(ctx, targets)
            return losses
        return self._detect(feature, (semantic, sem_stride, ctx), props, size)

    def _feature(self, images: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """The RoI map (reduced) and, with semantic/context features, the deepest map."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        feats = self.backbone(x)
        feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
        semantic = feats[self.semantic_index] if self.semantic_index >= 0 else None
        return self.reduce(feats[self.feature_index]), semantic

    def _given_proposals(self, images: Tensor, targets: Optional[list[dict[str, Tensor]]], proposals: Optional[list[Tensor]]) -> list[Tensor]:
        """Proposals passed in, else the targets' ``proposals``, else (selective search only,
        at inference) computed here."""
        b = images.shape[0]
        if proposals is None and targets is not None and all("proposals" in t for t in targets):
            proposals = [t["proposals"] for t in targets]
        if proposals is None:
            if self.proposal_source == "selective_search" and not self.training:
                return [selective_search_tensor(img, self.ss_mode, self.ss_max, self.ss_resize) for img in images]
            raise ValueError(
                f"this Fast R-CNN uses {self.proposal_source!r} proposals: pass proposals=[Tensor[P, 4], ...] "
                "or targets with a 'proposals' key (detect.data.proposal_dataset.ProposalDataset attaches them)"
            )
        if len(proposals) != b:
            raise ValueError(f"got proposals for {len(proposals)} images, but the batch has {b}")
        for i, p in enumerate(proposals):
            if p.ndim != 2 or p.shape[-1] != 4:
                raise ValueError(f"proposals of image {i}: expected Tensor[P, 4] xyxy, got shape {tuple(p.shape)}")
        return list(proposals)

    @staticmethod
    def _clean(boxes: Tensor, size: tuple[int, int]) -> Tensor:
        boxes = clip_boxes_to_image(boxes, size)
        return boxes[remove_small_boxes(boxes, 1e-2)]

    def _heads(self, feature: Tensor, deep: tuple[Optional[Tensor], float, Optional[Tensor]], rois: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits (Tensor[sum R_i, K+1]) and boxes (Tensor[sum R_i, (K+1)*4]) of the RoIs.
        ``deep``: the deepest map (or None), its stride, and the image-level context logits."""
        semantic, sem_stride, ctx = deep
        # pool in float32: box coordinates in fp16 would be off by up to 0.25 px past 256
        rois = [r.float() for r in rois]
        pooled = self.roi_pool(feature.float(), rois).to(feature.dtype)  # (sum R_i, C, roi, roi)
        sem = roi_mean_pool(semantic, rois, sem_stride) if self.semantic else None  # (sum R_i, C32)
        logits, boxes = self.predictor(self.box_head(pooled), sem)
        if ctx is not None and self.context_pool == "box":  # each RoI reads the context of its own area
            mean = sem if sem is not None else roi_mean_pool(semantic, rois, sem_stride)  # (sum R_i, C32)
            logits = logits + self.context.bias(self.context.fc(mean.to(logits.dtype)))
        elif ctx is not None:
            counts = torch.tensor([len(r) for r in rois], device=ctx.device)
            logits = logits + self.context.bias(ctx).repeat_interleave(counts, dim=0)  # each RoI gets its image's row
        return logits, boxes

    def _train_head(self, feature: Tensor, deep: tuple, props: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        rois, labels, matched = [], [], []
        for p, t in zip(props, targets):
            gt = t["boxes"].to(feature.device, torch.float32).reshape(-1, 4)
            r, lab, m = sample_rois_per_image(
                add_gt_proposals(p, gt), gt, t["labels"].to(feature.device).reshape(-1),
                self.rois_per_image, self.fg_fraction, self.fg_iou, self.bg_iou,
            )
            rois.append(r)
            labels.append(lab)
            matched.append(m)
        box_targets = torch.cat(self.box_coder.encode(matched, rois)) if sum(len(r) for r in rois) else feature.new_zeros(0, 4)
        logits, regression = self._heads(feature, deep, rois)
        return fast_rcnn_loss(logits, regression, torch.cat(labels), box_targets)

    def _detect(self, feature: Tensor, deep: tuple, props: list[Tensor], size: tuple[int, int]) -> list[dict[str, Tensor]]:
        logits, regression = self._heads(feature, deep, props)
        return postprocess_detections(
            logits, regression, props, size, self.box_coder, self.score_thresh, self.nms_thresh, self.max_det
        )


def build_fast_rcnn(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True,
                    backbone: Optional[nn.Module] = None) -> FastRCNN:
    """Fast R-CNN from a model config (its settings in ``cfg.fast_rcnn``; ``context`` and
    ``context_loss`` concrete: :meth:`detect.models.specs.ModelSpec.concrete`) and the preprocessing.

    The backbone (``cfg.backbone``, ImageNet weights unless ``cfg.pretrained == "none"`` or
    ``load_weights`` is False) is cut after its stride-``feature_stride`` stage. The model
    normalises with ``preprocess`` as given (:func:`detect.models.build.build_model` fits it to
    those weights). ``backbone`` replaces it (tests plug tiny ones in).
    """
    if backbone is None:
        stride = cfg.fast_rcnn.feature_stride
        deep = (cfg.fast_rcnn.semantic or cfg.context != "none") and stride < 32  # the stride-32 map too
        backbone = build_config_backbone(cfg, load_weights, out_strides=(stride, 32) if deep else (stride,))
    return FastRCNN(
        backbone, cfg.num_classes, cfg.fast_rcnn, mean=tuple(preprocess.mean), std=tuple(preprocess.std),
        imgsz=preprocess.imgsz, score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, max_det=cfg.max_det,
        context=cfg.context, context_loss=float(cfg.context_loss), context_pool=cfg.context_pool,
    )
