"""Fast R-CNN on CPU with a tiny backbone: mini-batch sampling, the loss, empty images, and
overfitting 4 images with fixed proposals and with the RPN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from detect.config import FastRCNNConfig
from detect.models.fast_rcnn import FastRCNN
from detect.models.roi_heads import fast_rcnn_loss, sample_rois_per_image

S = 64  # image side


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's
    waiting for a descheduled thread makes a 2 s test take a minute."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyBackbone(nn.Module):
    """Two feature maps (strides 4 and 8) as the project's backbones report them."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU())
        self.channels, self.strides = [16, 32], [4, 8]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.stem(x)
        return [c4, self.down(c4)]


def _model(proposals: str = "file", **kw) -> FastRCNN:
    torch.manual_seed(0)
    settings = dict(proposals=proposals, feature_stride=8, fc_dim=128, rois_per_image=32)
    post = dict(score_thresh=0.05, max_det=20)
    for k, v in kw.items():
        (post if k in ("score_thresh", "nms_thresh", "max_det", "context", "context_loss") else settings)[k] = v
    return FastRCNN(TinyBackbone(), 2, FastRCNNConfig(**settings), imgsz=S, **post)


def _scene(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A noisy grey image with one red (class 0) and/or one blue (class 1) rectangle."""
    g = torch.Generator().manual_seed(seed)
    img = 0.4 + 0.05 * torch.randn(3, S, S, generator=g)
    boxes, labels = [], []
    spots = [(4, 6, 30, 40), (34, 20, 60, 58)]
    for cls, (x1, y1, x2, y2) in enumerate(spots):
        if seed % 3 == cls:  # some images have only one object
            continue
        img[:, y1:y2, x1:x2] = torch.tensor([0.9, 0.1, 0.1] if cls == 0 else [0.1, 0.2, 0.9]).view(3, 1, 1)
        boxes.append([x1, y1, x2, y2])
        labels.append(cls)
    return img.clamp(0, 1), {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                             "labels": torch.tensor(labels, dtype=torch.int64)}


def _grid_proposals() -> torch.Tensor:
    """Sliding windows on a 4 px grid, sides 16..56: fixed, image-independent proposals."""
    out = []
    for w in range(16, 57, 8):
        for h in range(16, 57, 8):
            for x in range(0, S - w + 1, 4):
                for y in range(0, S - h + 1, 4):
                    out.append([x, y, x + w, y + h])
    return torch.tensor(out, dtype=torch.float32)


def _overfit(model: FastRCNN, steps: int, with_proposals: bool) -> tuple[list[float], list[dict], list[dict]]:
    images, targets = zip(*[_scene(i) for i in range(4)])
    images = torch.stack(images)
    targets = list(targets)
    if with_proposals:
        props = _grid_proposals()
        targets = [{**t, "proposals": props} for t in targets]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        dets = model(images, proposals=[t["proposals"] for t in targets]) if with_proposals else model(images)
    return history, dets, targets


def _assert_found(dets: list[dict], targets: list[dict], iou: float) -> None:
    for d, t in zip(dets, targets):
        for box, label in zip(t["boxes"], t["labels"]):
            mine = d["labels"] == label
            assert mine.any(), f"class {int(label)} not detected"
            best = box_iou(box[None], d["boxes"][mine]).max()
            assert best >= iou, f"class {int(label)}: best IoU {float(best):.2f}"
        assert d["labels"].dtype == torch.int64 and (d["labels"] >= 0).all() and (d["labels"] < 2).all()


def test_overfits_four_images_with_fixed_proposals() -> None:
    history, dets, targets = _overfit(_model("file"), steps=120, with_proposals=True)
    assert np.mean(history[-5:]) < 0.3 * history[0], history[::10]
    _assert_found(dets, targets, iou=0.7)
    # the best-scoring detection of each image is a true object
    for d, t in zip(dets, targets):
        top = d["boxes"][d["scores"].argmax()]
        assert box_iou(top[None], t["boxes"]).max() > 0.7


def test_overfits_four_images_with_rpn_proposals() -> None:
    model = _model("rpn")
    history, dets, targets = _overfit(model, steps=100, with_proposals=False)
    assert np.mean(history[-5:]) < 0.3 * history[0], history[::10]
    _assert_found(dets, targets, iou=0.6)


def test_sampling_takes_25_percent_foreground_and_background_in_01_05() -> None:
    torch.manual_seed(0)
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0]])
    shifts = torch.linspace(0, 300, 3000)
    props = gt.repeat(len(shifts), 1) + torch.stack([shifts, torch.zeros_like(shifts)] * 2, 1)
    iou = box_iou(props, gt)[:, 0]
    assert (iou >= 0.5).sum() > 40 and ((iou >= 0.1) & (iou < 0.5)).sum() > 200
    rois, labels, matched = sample_rois_per_image(props, gt, torch.tensor([3]), rois_per_image=128)
    assert len(rois) == 128
    assert (labels > 0).sum() == 32 and (labels[:32] == 4).all()  # 25%, class 3 -> internal 4
    r_iou = box_iou(rois, gt)[:, 0]
    assert (r_iou[:32] >= 0.5).all()
    assert ((r_iou[32:] >= 0.1) & (r_iou[32:] < 0.5)).all()
    assert torch.equal(matched[:32], gt.repeat(32, 1))
    # few foreground: all of them, background fills the rest
    few = torch.cat([props[iou >= 0.5][:5], props[iou < 0.5]])
    _, labels, _ = sample_rois_per_image(few, gt, torch.tensor([0]), rois_per_image=128)
    assert (labels > 0).sum() == 5 and len(labels) == 128


def test_background_widens_to_0_05_when_too_few_in_01_05() -> None:
    torch.manual_seed(0)
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    hard = torch.tensor([[5.0, 0.0, 15.0, 10.0]] * 3)  # IoU 1/3
    easy = torch.tensor([[50.0, 50.0, 60.0, 60.0]] * 40)  # IoU 0
    rois, labels, _ = sample_rois_per_image(torch.cat([hard, easy]), gt, torch.tensor([0]), rois_per_image=16)
    assert len(rois) == 16 and (labels == 0).all()
    assert sum(torch.equal(r, hard[0]) for r in rois) == 3  # every hard negative is taken
    # an image without objects: background only, from IoU 0
    rois, labels, _ = sample_rois_per_image(easy, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), rois_per_image=16)
    assert len(rois) == 16 and (labels == 0).all()


def test_loss_is_cross_entropy_plus_smooth_l1_on_own_class_boxes() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    reg = torch.zeros(2, 12)
    reg[1, 4:8] = torch.tensor([0.5, 0.0, 2.0, 0.0])  # class 1's box of RoI 1
    reg[1, 8:12] = 9.0  # another class's box: must not count
    labels = torch.tensor([0, 1])
    targets = torch.zeros(2, 4)
    out = fast_rcnn_loss(logits, reg, labels, targets)
    torch.testing.assert_close(out["loss_classifier"], F.cross_entropy(logits, labels))
    # smooth L1 (beta 1): 0.5 * 0.5^2 + (2 - 0.5) = 1.625, divided by R = 2
    torch.testing.assert_close(out["loss_box_reg"], torch.tensor(1.625 / 2))


def test_images_without_proposals_or_targets_train_and_predict() -> None:
    model = _model("file")
    img, tgt = _scene(1)
    empty_t = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "proposals": torch.zeros(0, 4)}
    model.train()
    # one normal image beside an image with nothing at all
    losses = model(torch.stack([img, torch.rand(3, S, S)]), [{**tgt, "proposals": _grid_proposals()[:50]}, empty_t])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # a batch with no RoIs anywhere: zero losses that still backpropagate
    model.zero_grad()
    losses = model(torch.rand(2, 3, S, S), [empty_t, empty_t])
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    # ground truth without proposals: the ground-truth boxes are the RoIs
    losses = model(img[None], [{**tgt, "proposals": torch.zeros(0, 4)}])
    assert losses["loss_classifier"] > 0
    model.eval()
    with torch.no_grad():
        dets = model(torch.rand(2, 3, S, S), proposals=[torch.zeros(0, 4), _grid_proposals()[:10]])
    assert dets[0]["boxes"].shape == (0, 4) and dets[0]["scores"].shape == (0,) and dets[0]["labels"].dtype == torch.int64
    assert len(dets[1]["boxes"]) <= 20  # max_det


def test_rpn_trains_on_images_without_objects() -> None:
    model = _model("rpn").train()
    losses = model(torch.rand(2, 3, S, S), [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_proposal_sources_at_inference() -> None:
    img = _scene(0)[0][None]
    with pytest.raises(ValueError, match="proposals=.*Tensor"):
        _model("file").eval()(img)
    with pytest.raises(ValueError, match="batch has 1"):
        _model("file").eval()(img, proposals=[torch.zeros(0, 4)] * 2)
    # a selective-search model without given proposals runs selective search itself
    ss = _model("selective_search", ss_resize=0).eval()
    with torch.no_grad():
        out = ss(img)
    assert len(out) == 1 and out[0]["boxes"].shape[-1] == 4
    # RoIAlign and the conv head are options of the same model
    m = _model("file", roi_op="roi_align", head="conv").eval()
    with torch.no_grad():
        out = m(img, proposals=[_grid_proposals()[:30]])
    assert out[0]["boxes"].shape[-1] == 4
    with pytest.raises(ValueError, match="feature_stride=32"):
        _model("file", feature_stride=32)


def test_boxes_are_in_input_pixels_and_clipped() -> None:
    model = _model("file", score_thresh=0.0).eval()
    props = torch.tensor([[-10.0, -10.0, 80.0, 80.0], [10.0, 10.0, 30.0, 30.0]])
    with torch.no_grad():
        d = model(torch.rand(1, 3, S, S), proposals=[props])[0]
    assert len(d["boxes"]) > 0
    assert d["boxes"].min() >= 0 and d["boxes"].max() <= S
    assert np.isfinite(d["scores"].numpy()).all()


def test_build_model_makes_a_fast_rcnn_on_the_project_backbone() -> None:
    from detect.config import ExperimentConfig, ModelConfig, Preprocess
    from detect.models.build import build_model

    cfg = ModelConfig(name="fast_rcnn", pretrained="none", num_classes=3,
                      fast_rcnn=FastRCNNConfig(proposals="selective_search", roi_op="roi_align", fc_dim=64))
    model = build_model(cfg, Preprocess(imgsz=64))
    assert isinstance(model, FastRCNN) and model.feature_stride == 16 and model.rpn is None
    assert model.backbone.strides == [16, 32]  # the stride-32 map feeds the semantic features and the context
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64), proposals=[torch.tensor([[0.0, 0.0, 32.0, 32.0]])])
    assert out[0]["boxes"].shape[-1] == 4
    with pytest.raises(ValueError, match="unknown config key 'model.fast_rcnn.fc_size'"):
        ExperimentConfig.from_dict({"model": {"name": "fast_rcnn", "fast_rcnn": {"fc_size": 1}}})



def test_semantic_and_context_features_overfit_and_start_like_the_plain_head() -> None:
    """RoI-pooled deepest-map features join the classifier, the image's pooled map adds one
    logit vector per image; with the context at zero the scores depend on both inputs only
    through the classifier, and the model still learns four images."""
    model = _model("file", feature_stride=4, semantic=True, context="add")
    assert model.semantic_index == 1 and model.predictor.cls_score.in_features == 128 + 32
    images = torch.stack([_scene(i)[0] for i in range(2)])
    props = [_grid_proposals()[:50], _grid_proposals()[50:80]]
    model.eval()
    with torch.no_grad():
        feature, semantic = model._feature(images)
        logits, _ = model._heads(feature, (semantic, 8.0, model.context(semantic)), props)
        model.context.fc.bias[1] = 3.0
        shifted, _ = model._heads(feature, (semantic, 8.0, model.context(semantic)), props)
    assert logits.shape == (80, 3)
    torch.testing.assert_close(shifted - logits, torch.zeros_like(logits).index_fill_(1, torch.tensor([1]), 3.0))
    with torch.no_grad():
        model.context.fc.bias.zero_()
    history, dets, targets = _overfit(model, steps=120, with_proposals=True)
    assert np.mean(history[-5:]) < 0.3 * history[0], history[::10]
    _assert_found(dets, targets, iou=0.7)
    # a backbone whose deepest map is the RoI map (feature_stride 32 on the real ones): the context reads that map
    shared = _model("file", feature_stride=8, context="prior")
    assert shared.semantic_index == shared.feature_index
    shared.eval()
    with torch.no_grad():
        assert len(shared(images, proposals=props)) == 2


def test_build_model_taps_stride_32_for_semantic_features() -> None:
    from detect.config import ModelConfig, Preprocess
    from detect.models.build import build_model

    cfg = ModelConfig(name="fast_rcnn", pretrained="none", num_classes=3, context="prior", context_loss=0.5,
                      fast_rcnn=FastRCNNConfig(fc_dim=64, semantic=True))
    model = build_model(cfg, Preprocess(imgsz=64))
    assert model.backbone.strides == [16, 32] and model.backbone.channels[-1] == 1280
    model.train()
    losses = model(torch.rand(2, 3, 64, 64), [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 50.0]]), "labels": torch.tensor([1])}] * 2)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_context"].item() == pytest.approx(0.5 * np.log(3), rel=1e-4)  # zero-initialised context
