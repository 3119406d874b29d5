"""SSD (Liu et al. 2016) with SSDLite-style light layers on a pretrained BN backbone.

Shorthand: B images of S x S pixels, K object classes, C = K + 1 logits (0 = background),
A_k default boxes per location of feature map k, N = sum_k H_k * W_k * A_k default boxes.

Layout: backbone maps at strides 8/16/32, then extra blocks (1x1 conv, 3x3 depthwise stride 2,
1x1 conv; each conv + BN + ReLU6) halving the last map until it is at most 2 pixels wide (320:
40, 20, 10, 5, 3, 2). Each map has one light head: a 3x3 depthwise conv + BN + ReLU6 shared by
both tasks, then one 1x1 conv predicting A_k * (4 + C) values (box codes first, then logits).

Contract (docs/ARCHITECTURE.md): ``images`` are Tensor[B, 3, S, S] float RGB in [0, 1]; the model
normalises them with the preprocessing mean/std (buffers, not saved: the config holds them). Train
mode: ``model(images, targets) -> {"loss_box", "loss_cls"}``; eval mode: ``model(images) ->
list[{"boxes": Tensor[D, 4] xyxy pixels of the S x S input, "scores": Tensor[D], "labels":
Tensor[D] int64 0-based}]``, i.e. ``postprocess(*decoded(images))``: :meth:`SSD.decoded` (network,
softmax, box decoding) is also the head that export and ONNX Runtime run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torchvision.models.detection._utils import BoxCoder

from detect.boxes import decode_boxes
from detect.config import ModelConfig, Preprocess
from detect.models.anchors import DefaultBoxes, fit_default_boxes, record_box_shapes, resolve_default_boxes
from detect.models.backbones import Backbone, build_config_backbone
from detect.models.box_classifier import BoxClassifier
from detect.models.layers import conv_bn_act
from detect.models.context import ImageContext
from detect.models.roi_mean import roi_mean_weights
from detect.models.postprocess import decode_outputs, select_detections
from detect.models.ssd_loss import multibox_loss

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def extra_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """SSDLite extra layer: 1x1 to out/2, 3x3 depthwise stride 2, 1x1 to out (each + BN + ReLU6)."""
    mid = max(16, out_ch // 2)
    return nn.Sequential(
        conv_bn_act(in_ch, mid, 1),
        conv_bn_act(mid, mid, 3, stride=2, groups=mid),
        conv_bn_act(mid, out_ch, 1),
    )


def head_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 depthwise conv + BN + ReLU6, then a 1x1 predictor conv (with bias)."""
    return nn.Sequential(conv_bn_act(in_ch, in_ch, 3, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1))


def num_extra_maps(last_size: int, min_size: int = 2) -> int:
    """Extra stride-2 maps added after a backbone map of ``last_size`` pixels until <= ``min_size``."""
    n = 0
    while last_size > min_size:
        last_size = (last_size + 1) // 2  # 3x3, stride 2, padding 1
        n += 1
    return n


class SSD(nn.Module):
    """SSD detector; see the module docstring for the train/eval contract.

    Args:
        backbone: feature extractor reporting ``channels``/``strides``.
        num_classes: K, object classes without background.
        imgsz: S, the training input size (used to lay out the extra layers).
        mean, std: per-channel normalisation of [0, 1] RGB input.
        scales, aspect_ratios: default boxes (see detect.models.anchors); None = SSD defaults.
        extra_channels: output channels of the extra blocks (the last value repeats).
    """

    spec_name = "ssd"  # its row in detect.models.specs.MODEL_SPECS

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        imgsz: int = 320,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        scales: Optional[Sequence[float]] = None,
        aspect_ratios: Optional[Sequence[Sequence[float]]] = None,
        extra_channels: Sequence[int] = (256, 256, 128),
        neg_pos_ratio: int = 3,
        box_loss: str = "smooth_l1",
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        pre_nms_topk: int = 1000,
        max_det: int = 300,
        context: str = "none",
        context_loss: float = 0.0,
        context_pool: str = "image",
        box_classifier: bool = False,
        box_classifier_topk: int = 100,
        box_classifier_weight: float = 0.5,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (object classes without background), got {num_classes}")
        if imgsz < 64:
            raise ValueError(f"imgsz must be at least 64 pixels, got {imgsz}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

        if backbone.input_size != imgsz:  # its map sizes at imgsz lay out the extra layers
            raise ValueError(f"the backbone was measured at {backbone.input_size} px, the SSD is for {imgsz} px: "
                             "build it with input_size=imgsz")
        n_extra = num_extra_maps(backbone.sizes[-1])
        chans = list(backbone.channels)
        self.extras = nn.ModuleList()
        for i in range(n_extra):
            out = extra_channels[min(i, len(extra_channels) - 1)]
            self.extras.append(extra_block(chans[-1], out))
            chans.append(out)

        scales, ratios = resolve_default_boxes(len(chans), scales, aspect_ratios)
        self.default_boxes = DefaultBoxes(scales, ratios)
        self.anchors_per_location = self.default_boxes.num_anchors()
        self.heads = nn.ModuleList(
            head_block(c, a * (4 + num_classes + 1)) for c, a in zip(chans, self.anchors_per_location)
        )
        # Image-level context: the stride-32 map pooled over the whole image (what an ImageNet
        # classifier reads) gives one logit vector per image, added to every default box's.
        self.context_index = len(backbone.channels) - 1
        self.context = ImageContext(chans[self.context_index], num_classes, context) if context != "none" else None
        self.context_loss = float(context_loss)
        self.context_pool = context_pool  # "image" or "box" (detect/models/context.py); read at every call
        # A second look at the best boxes (detect/models/box_classifier.py): their class from
        # their own stride-16 and stride-32 features.
        if box_classifier and self.context_index < 1:
            raise ValueError("the box classifier reads the stride-16 and stride-32 maps: the backbone must give both")
        self.box_classifier = BoxClassifier(chans[self.context_index - 1], chans[self.context_index], num_classes) \
            if box_classifier else None
        self.box_classifier_topk = int(box_classifier_topk)  # read at every call, as is the weight
        self.box_classifier_weight = float(box_classifier_weight)
        self.box_coder = BoxCoder(weights=BOX_CODER_WEIGHTS)
        self.neg_pos_ratio, self.box_loss = neg_pos_ratio, box_loss
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.pre_nms_topk, self.max_det = pre_nms_topk, max_det
        self._init_new_layers()

    def _init_new_layers(self) -> None:
        """Predictors start small (near-uniform scores, anchors as boxes); convs before a BN keep
        PyTorch's default init."""
        for head in self.heads:
            nn.init.normal_(head[-1].weight, std=0.01)
            nn.init.zeros_(head[-1].bias)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised input -> backbone maps + extra maps (fine to coarse)."""
        x = (images - self.mean) / self.std
        feats = self.backbone(x)
        for extra in self.extras:
            feats.append(extra(feats[-1]))
        return feats

    def head_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs (for losses, export and custom postprocessing).

        Returns:
            cls_logits (Tensor[B, N, K+1]), box_regression (Tensor[B, N, 4]), anchors (Tensor[N, 4]
            float32 xyxy input pixels).
        """
        cls_logits, box_regression, anchors, _, _ = self._outputs(images)
        return cls_logits, box_regression, anchors

    def _outputs(self, images: torch.Tensor, anchors: Optional[torch.Tensor] = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], list[torch.Tensor]]:
        """:meth:`head_outputs`, the context logits (Tensor[B, K+1], None without context) and
        the feature maps; ``anchors`` given (those of this input size) are used instead of computed."""
        feats = self.features(images)
        outs = []
        for f, head, a in zip(feats, self.heads, self.anchors_per_location):
            o = head(f)
            b, _, h, w = o.shape
            outs.append(o.permute(0, 2, 3, 1).reshape(b, h * w * a, -1))  # (B, A*(4+C), H, W) -> (B, H*W*A, 4+C)
        out = torch.cat(outs, 1)  # (B, N, 4+C)
        if anchors is None:
            sizes = [tuple(f.shape[-2:]) for f in feats]
            anchors = self.default_boxes(sizes, tuple(images.shape[-2:]), images.device, torch.float32)
        cls_logits, ctx = out[..., 4:], None
        if self.context is not None:
            deep = feats[self.context_index]
            ctx = self.context(deep)  # (B, C32, h, w) -> (B, C)
            if self.context_pool == "box":  # each default box reads the context of its own area
                weights = roi_mean_weights(anchors.to(deep.dtype), tuple(deep.shape[-2:]), images.shape[-1] / deep.shape[-1])
                cls_logits = cls_logits + self.context.bias(self.context.at_boxes(deep, weights))  # (B, N, C)
            else:
                cls_logits = cls_logits + self.context.bias(ctx).unsqueeze(1)  # (B, 1, C) broadcast over the N boxes
        return cls_logits, out[..., :4], anchors, ctx, feats

    def decoded(self, images: torch.Tensor, anchors: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network and its box decoding, the SSD's one export head (``detect export``, ONNX
        Runtime and eval all run it). ``anchors`` (Tensor[N, 4], from :meth:`head_outputs` at
        this input size): export passes them so the graph holds them as a constant instead of
        computing them from the feature maps' shapes on every run.

        With the box classifier, the ``box_classifier_topk`` most object-like boxes of each image
        take their class from it (:meth:`BoxClassifier.rescore`) and the other rows are zero.

        Returns:
            boxes (Tensor[B, N, 4] float32, xyxy pixels of the S x S input, clipped to it),
            scores (Tensor[B, N, K] float32, softmax probabilities, background dropped).
        """
        cls_logits, box_regression, anchors, _, feats = self._outputs(images, anchors)
        weights = tuple(float(w) for w in self.box_coder.weights)
        boxes, scores = decode_outputs(cls_logits, box_regression, anchors, weights, self.box_coder.bbox_xform_clip,
                                       images.shape[-2:])
        if self.box_classifier is None:
            return boxes, scores
        mid, deep = feats[self.context_index - 1], feats[self.context_index]
        return boxes, self.box_classifier.rescore(mid, deep, boxes, scores, float(images.shape[-1]), self.box_classifier_topk,
                                                  self.box_classifier_weight)

    def forward(self, images: torch.Tensor, targets: Optional[list[dict[str, torch.Tensor]]] = None):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images Tensor[B, 3, S, S], got shape {tuple(images.shape)}")
        if not self.training:
            return self.postprocess(*self.decoded(images))
        if targets is None or len(targets) != images.shape[0]:
            raise ValueError("training mode needs one target dict per image: model(images, targets)")
        _check_targets(targets, self.num_classes)
        cls_logits, box_regression, anchors, ctx, feats = self._outputs(images)
        losses = multibox_loss(cls_logits, box_regression, anchors, targets, self.box_coder, self.neg_pos_ratio, self.box_loss)
        if ctx is not None and self.context_loss > 0:
            losses["loss_context"] = self.context_loss * self.context.loss(ctx, targets)
        if self.box_classifier is not None:  # RoIs from the boxes the SSD predicts now (no gradient through them)
            decoded = decode_boxes(box_regression.detach().float(), anchors.float(), self.box_coder.weights,
                                   self.box_coder.bbox_xform_clip)  # (B, N, 4)
            mid, deep = feats[self.context_index - 1], feats[self.context_index]
            losses["loss_box_cls"] = self.box_classifier.loss(mid, deep, decoded, targets, float(images.shape[-1]))
        return losses

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Decoded outputs (:meth:`decoded`) -> per-image detections, with this model's
        ``score_thresh``, ``nms_thresh``, ``pre_nms_topk`` and ``max_det`` (read at every call)."""
        return select_detections(boxes, scores, self.score_thresh, self.nms_thresh, self.pre_nms_topk, self.max_det)


def _check_targets(targets: list[dict[str, torch.Tensor]], num_classes: int) -> None:
    for i, t in enumerate(targets):
        boxes, labels = t.get("boxes"), t.get("labels")
        if boxes is None or labels is None:
            raise ValueError(f"target {i}: needs 'boxes' (Tensor[G, 4]) and 'labels' (Tensor[G])")
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"target {i}: boxes {tuple(boxes.shape)} and labels {tuple(labels.shape)} do not match")
    labels = torch.cat([t["labels"].reshape(-1) for t in targets])
    if labels.device.type != "cpu":  # reading values back would sync the GPU every step; the
        return  # datasets build labels from the class list, and CPU runs still check
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"target labels must be in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def ssd_num_maps(cfg: ModelConfig, imgsz: int) -> int:
    """How many feature maps (so how many default-box scales) an SSD for ``cfg`` at ``imgsz`` has:
    its backbone measured on the meta device (shapes only: no weights, no memory, no compute)."""
    with torch.device("meta"):
        backbone = build_config_backbone(cfg, load_weights=False, input_size=imgsz)
    return len(backbone.sizes) + num_extra_maps(backbone.sizes[-1])


def fit_anchor_config(cfg: ModelConfig, imgsz: int, records: Sequence, log: Callable[[str], None] = print,
                      num_ratios: int = 3) -> ModelConfig:
    """The SSD's ``fit`` hook (:mod:`detect.models.specs`): with ``ssd.fit_anchors`` on and no
    default boxes given, a copy of ``cfg`` whose ``ssd.anchor_sizes``/``ssd.aspect_ratios`` are
    fitted to the boxes of ``records`` (so the fitted values are saved with the config, and a
    resumed run or a checkpoint rebuilds the same model); else ``cfg`` itself."""
    if not cfg.ssd.fit_anchors or cfg.ssd.anchor_sizes is not None:
        return cfg
    wh = record_box_shapes(records)  # (M, 2) w, h / image size
    scales, ratios = fit_default_boxes(wh, ssd_num_maps(cfg, imgsz), num_ratios=num_ratios)
    log(f"default boxes fitted to {len(wh)} training boxes: scales {[round(x, 3) for x in scales]}, "
        f"ratios {[round(x, 2) for x in ratios[0]]}")
    return dataclasses.replace(cfg, ssd=dataclasses.replace(cfg.ssd, anchor_sizes=scales, aspect_ratios=ratios))


def build_ssd(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> SSD:
    """An SSD for ``cfg`` (its own settings in ``cfg.ssd``; ``context`` and ``context_loss``
    concrete: :meth:`detect.models.specs.ModelSpec.concrete`) normalising with ``preprocess`` as
    given; ``load_weights=False`` skips the ImageNet weights (the caller loads a checkpoint next)."""
    backbone = build_config_backbone(cfg, load_weights, input_size=preprocess.imgsz)
    s = cfg.ssd
    return SSD(
        backbone, cfg.num_classes, preprocess.imgsz, preprocess.mean, preprocess.std,
        scales=s.anchor_sizes, aspect_ratios=s.aspect_ratios, neg_pos_ratio=s.neg_pos_ratio,
        box_loss=s.box_loss, score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
        pre_nms_topk=cfg.pre_nms_topk, max_det=cfg.max_det, context=cfg.context,
        context_loss=float(cfg.context_loss), context_pool=cfg.context_pool,
        box_classifier=bool(s.box_classifier), box_classifier_topk=s.box_classifier_topk,
        box_classifier_weight=s.box_classifier_weight,
    )
