"""SSD: default boxes (against torchvision's generator), anchor fitting, loss and backward, empty
images, overfitting 4 images, the eval contract, build options, the image-level context. The
postprocess functions are test_postprocess.py, the batched loss against its reference test_ssd_loss.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from test_postprocess import random_head

from detect.config import ModelConfig, Preprocess
from detect.models import postprocess as pp
from detect.models.anchors import DefaultBoxes, fit_default_boxes, record_box_shapes, resolve_default_boxes
from detect.models.backbones import input_preprocess
from detect.models.build import build_model
from detect.models.ssd import SSD, fit_anchor_config, ssd_num_maps
from detect.models.ssd_loss import match_anchors

K = 3  # object classes in the tiny configs


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_ssd(imgsz: int = 128, pretrained: str = "none", **kw) -> SSD:
    from detect.config import SSDConfig

    torch.manual_seed(0)
    ssd = SSDConfig(**{k: kw.pop(k) for k in list(kw) if k in SSDConfig.__dataclass_fields__})  # SSD-only settings
    cfg = ModelConfig(num_classes=K, pretrained=pretrained, bn=kw.pop("bn", "train"), ssd=ssd, **kw)
    return build_model(cfg, Preprocess(imgsz=imgsz))


def targets_for(n: int, imgsz: int = 128) -> list[dict[str, torch.Tensor]]:
    """Seeded boxes: a tall bottle, a wide box and a square product per image (shifted per image)."""
    out = []
    for i in range(n):
        s = imgsz / 128
        boxes = torch.tensor([[10 + 4 * i, 8, 34 + 4 * i, 80], [50, 70 + 3 * i, 120, 100 + 3 * i], [70, 10, 110, 50]]) * s
        out.append({"boxes": boxes.float(), "labels": torch.tensor([0, 1, 2 - i % 2])})
    return out


def render(targets: list[dict[str, torch.Tensor]], imgsz: int = 128) -> torch.Tensor:
    """Images where each box is a flat patch whose colour depends on its class."""
    g = torch.Generator().manual_seed(1)
    imgs = 0.4 + 0.1 * torch.rand(len(targets), 3, imgsz, imgsz, generator=g)
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.2, 1.0]])
    for img, t in zip(imgs, targets):
        for (x1, y1, x2, y2), l in zip(t["boxes"].round().int().tolist(), t["labels"].tolist()):
            img[:, y1:y2, x1:x2] = colours[l].view(3, 1, 1)
    return imgs


# ------------------------------------------------------------------ default boxes


def test_default_boxes_equal_torchvision_generator():
    tv_ratios = [[2], [2, 3], [2, 3], [2]]
    scales = [0.1, 0.3, 0.55, 0.8, 1.0]
    mine_ratios = [[1.0] + sum(([r, 1 / r] for r in rs), []) for rs in tv_ratios]
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3)]
    gen = DefaultBoxGenerator(tv_ratios, scales=scales, clip=True)
    ref = gen(ImageList(torch.zeros(1, 3, 160, 160), [(160, 160)]), [torch.zeros(1, 1, h, w) for h, w in sizes])[0]
    ours = DefaultBoxes(scales, mine_ratios)(sizes, (160, 160), torch.device("cpu"), torch.float32)
    assert ours.shape == ref.shape
    # Same boxes at every location; within a location the order differs (ours: listed ratios, then
    # the extra box; torchvision: s_k, the extra box, then r, 1/r).
    start = 0
    for (h, w), a in zip(sizes, DefaultBoxes(scales, mine_ratios).num_anchors()):
        n = h * w * a
        o = ours[start : start + n].view(h * w, a, 4)
        r = ref[start : start + n].view(h * w, a, 4)
        key = lambda t: t[..., 2] - t[..., 0] + 1000 * (t[..., 3] - t[..., 1])  # noqa: E731
        o = o.gather(1, key(o).argsort(1).unsqueeze(-1).expand(-1, -1, 4))
        r = r.gather(1, key(r).argsort(1).unsqueeze(-1).expand(-1, -1, 4))
        assert torch.allclose(o, r, atol=1e-3)
        start += n


def test_resolve_default_boxes_validates():
    scales, ratios = resolve_default_boxes(3, [0.2, 0.4, 0.8], [[1.0, 0.5]])
    assert scales == [0.2, 0.4, 0.8, 1.0] and ratios == [[1.0, 0.5]] * 3
    with pytest.raises(ValueError, match="expected 3"):
        resolve_default_boxes(3, [0.1, 0.2], None)
    with pytest.raises(ValueError, match="one per feature map"):
        resolve_default_boxes(3, None, [[1.0], [2.0]])
    with pytest.raises(ValueError, match="positive"):
        resolve_default_boxes(2, None, [[1.0, -2.0]])


def test_fit_default_boxes_finds_tall_and_wide_shapes():
    rng = np.random.default_rng(0)
    h = rng.uniform(0.2, 0.4, 300)
    tall = np.stack([h * 0.35 * rng.uniform(0.9, 1.1, 300), h], 1)  # bottles, w/h ~ 0.35
    w = rng.uniform(0.2, 0.5, 200)
    wide = np.stack([w, w / 2.5 * rng.uniform(0.9, 1.1, 200)], 1)  # boxes, w/h ~ 2.5
    square = np.full((100, 2), 0.15)
    scales, ratios = fit_default_boxes(np.concatenate([tall, wide, square]), num_maps=4, num_ratios=3)
    assert len(ratios) == 4 and all(r == ratios[0] for r in ratios)
    r = ratios[0]
    assert len(r) == 3 and r == sorted(r)
    assert 0.3 < r[0] < 0.4 and 0.9 < r[1] < 1.1 and 2.2 < r[2] < 2.8
    sizes = np.sqrt(np.concatenate([tall, wide, square]).prod(1))
    assert len(scales) == 5 and scales == sorted(scales)
    assert scales[0] == pytest.approx(np.quantile(sizes, 0.02), rel=0.01)
    assert scales[3] == pytest.approx(np.quantile(sizes, 0.98), rel=0.01)
    with pytest.raises(ValueError, match="valid boxes"):
        fit_default_boxes(np.zeros((5, 2)), 3)


def test_fit_anchor_config_matches_model_maps():
    from detect.structures import ImageRecord

    cfg = ModelConfig(num_classes=K, pretrained="none")
    rec = ImageRecord("a.jpg", 200, 100, boxes=np.array([[0, 0, 20, 30], [10, 10, 70, 20], [0, 0, 40, 20]], np.float32))
    records = [rec] * 10 + [ImageRecord("empty.jpg", 50, 50)]
    wh = record_box_shapes(records)
    assert wh.shape == (30, 2) and np.allclose(wh[:3], [[0.1, 0.3], [0.3, 0.1], [0.2, 0.2]])
    assert fit_anchor_config(cfg, 128, records) is cfg  # fit_anchors off: nothing fitted
    cfg.ssd.fit_anchors = True
    notes: list[str] = []
    fitted = fit_anchor_config(cfg, 128, records, notes.append)
    assert cfg.ssd.anchor_sizes is None and "30 training boxes" in notes[0]  # a new config; the given one is kept
    n = ssd_num_maps(cfg, 128)
    assert len(fitted.ssd.aspect_ratios) == n and len(fitted.ssd.anchor_sizes) == n + 1
    assert fit_anchor_config(fitted, 128, records) is fitted  # fitted once: a resumed run keeps them
    model = build_model(fitted, Preprocess(imgsz=128))
    assert model.anchors_per_location == [4] * n  # 3 fitted ratios + the extra square box


# ------------------------------------------------------------------ model


@pytest.mark.parametrize("imgsz,maps", [(64, 3), (300, 6), (320, 6), (512, 6)])
def test_input_sizes_head_matches_anchors(imgsz, maps):
    model = tiny_ssd(imgsz).eval()
    with torch.no_grad():
        logits, codes, anchors = model.head_outputs(torch.rand(1, 3, imgsz, imgsz))
    assert len(model.heads) == maps
    assert logits.shape == (1, anchors.shape[0], K + 1) and codes.shape == (1, anchors.shape[0], 4)
    assert float((anchors[:, 2:] - anchors[:, :2]).max()) <= imgsz + 1e-3  # sides clipped to the image


def test_loss_backward_and_empty_images():
    model = tiny_ssd().train()
    targets = targets_for(2)
    targets.append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})  # no boxes
    losses = model(render(targets), targets)
    box_cls = {"loss_box_cls"} if model.box_classifier is not None else set()  # the box classifier's, when on by default
    assert set(losses) == {"loss_box", "loss_cls", "loss_context"} | box_cls  # the default context is trained by its image loss
    total = sum(losses.values())
    assert torch.isfinite(total.detach()) and float(losses["loss_box"].detach()) > 0
    total.backward()
    head_grad = lambda: sum(float(h[-1].weight.grad.abs().sum()) for h in model.heads)  # noqa: E731
    assert head_grad() > 0
    assert model.backbone.stages[0][0].weight.grad is None  # stride <= 8 stays fixed by default (freeze_stride)
    assert model.backbone.stages[-1][0].weight.grad.abs().sum() > 0

    model.zero_grad()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(2)]
    losses = model(torch.rand(2, 3, 128, 128), empty)
    assert float(losses["loss_box"].detach()) == 0 and float(losses["loss_cls"].detach()) > 0  # background still learned
    sum(losses.values()).backward()
    assert head_grad() > 0


def test_giou_loss_and_target_validation():
    model = tiny_ssd(box_loss="giou").train()
    targets = targets_for(2)
    losses = model(render(targets), targets)
    assert 0 < float(losses["loss_box"].detach()) < 2 * 1.0001  # GIoU loss per positive is in [0, 2]
    bad = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([K])}]
    with pytest.raises(ValueError, match="labels must be in"):
        model(torch.rand(1, 3, 128, 128), bad)
    with pytest.raises(ValueError, match="one target dict per image"):
        model(torch.rand(1, 3, 128, 128))


def test_difficult_boxes_are_ignored_in_matching():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    boxes = torch.tensor([[0.0, 0, 10, 11], [20, 20, 31, 30]])
    m = match_anchors(anchors, boxes, torch.tensor([False, True]))
    assert m.tolist() == [0, -2, -1]
    assert match_anchors(anchors, boxes[:0], None).tolist() == [-1, -1, -1]


def test_overfit_four_images():
    """40 steps on 4 fixed images drive the loss below 0.3x its start, and the model then finds the boxes."""
    torch.manual_seed(0)
    model = tiny_ssd(pretrained="imagenet", bn="frozen").train()
    targets = targets_for(4)
    images = render(targets)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    start = None
    for step in range(40):
        loss = sum(model(images, targets).values())
        start = float(loss.detach()) if start is None else start
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * start, (start, float(loss.detach()))
    model.eval()
    with torch.no_grad():
        dets = model(images)
    for det, t in zip(dets, targets):
        hit = box_iou(t["boxes"], det["boxes"][:10]) > 0.5  # each box found among the 10 best
        assert hit.any(1).all(), det["boxes"][:5]


def test_channels_last_and_dtype_independent():
    model = tiny_ssd().eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        ref = model.head_outputs(x)
        cl = model.to(memory_format=torch.channels_last).head_outputs(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref, cl):
        assert torch.allclose(a, b, atol=1e-4)


def test_fuses_every_batchnorm():
    from detect.infer.fuse import fuse_conv_bn
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = tiny_ssd(bn="frozen").eval()
    n_bn = sum(isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules())
    x = torch.rand(1, 3, 128, 128)
    fused, n = fuse_conv_bn(model, x)
    assert n == n_bn
    with torch.no_grad():
        for a, b in zip(model.head_outputs(x), fused.head_outputs(x)):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_build_model_options():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(ModelConfig(num_classes=0), Preprocess())
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(name="yolo", num_classes=2), Preprocess())
    pre = Preprocess(imgsz=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with pytest.warns(UserWarning, match="replaced"):
        model = build_model(ModelConfig(num_classes=2), pre)  # lite0 ImageNet weights: TF preprocessing
    assert pre.mean == (0.485, 0.456, 0.406)  # the argument is not changed ...
    used = input_preprocess(ModelConfig(num_classes=2), pre)  # ... the trainer saves what the model uses
    assert used.mean == pytest.approx((127 / 255,) * 3) and used.imgsz == 64
    assert torch.allclose(model.mean.flatten(), torch.tensor(used.mean))
    assert "mean" not in model.state_dict()  # the preprocessing is saved once, in the config
    sync = build_model(ModelConfig(num_classes=2, pretrained="none", bn="sync"), Preprocess(imgsz=64))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in sync.heads.modules())


# ------------------------------------------------------------------ eval contract


def test_eval_contract_outputs():
    model = tiny_ssd(max_det=7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 128))
    assert len(out) == 2
    for d in out:
        assert set(d) == {"boxes", "scores", "labels"} and len(d["boxes"]) <= 7
        assert d["labels"].dtype == torch.int64 and (d["labels"] < K).all() and (d["labels"] >= 0).all()
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 128).all()


# ------------------------------------------------------------------ GPU (the lead's device run)


@pytest.mark.gpu
def test_cuda_amp_train_step_and_fp16_batch_inference():
    """On CUDA: an AMP train step at 320 px (channels_last), then fp16 inference at batch 256
    whose postprocess matches the CPU one; prints the network + postprocess images/s."""
    import time

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=12), Preprocess(imgsz=320)).to(dev).to(memory_format=torch.channels_last)
    targets = [{k: v.to(dev) for k, v in t.items()} for t in targets_for(8, 320)]
    images = render(targets_for(8, 320), 320).to(dev).contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with torch.autocast("cuda", dtype=torch.float16):
        losses = model(images, targets)
    assert all(torch.isfinite(v.detach()) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()

    model.eval().half()
    x = torch.rand(256, 3, 320, 320, device=dev).half().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            dets = model(x)
        torch.cuda.synchronize()
        print(f"\nSSD lite0 320 fp16 batch 256 (random weights, score_thresh {model.score_thresh}): "
              f"{5 * 256 / (time.perf_counter() - t):.0f} images/s")
        assert len(dets) == 256 and all(len(d["boxes"]) <= model.max_det for d in dets)
    logits, codes, anchors = random_head(16, 9602, 13, seed=3)  # distinct scores: no tie order
    weights = tuple(model.box_coder.weights)
    gpu = model.postprocess(*pp.decode_outputs(logits.to(dev), codes.to(dev), anchors.to(dev), weights, math.log(1000 / 16), (320, 320)))
    cpu = model.postprocess(*pp.decode_outputs(logits, codes, anchors, weights, math.log(1000 / 16), (320, 320)))
    for g, c in zip(gpu, cpu):
        n = min(20, len(c["scores"]))
        assert torch.allclose(g["scores"][:n].cpu(), c["scores"][:n], atol=1e-4)
        assert torch.allclose(g["boxes"][:n].cpu(), c["boxes"][:n], atol=1e-2)


# ------------------------------------------------------------------ image-level context


def test_context_starts_neutral_learns_from_the_image_loss_and_exports_in_head_outputs():
    plain, ctx = tiny_ssd(), tiny_ssd(context="add", context_loss=1.0)
    ctx.load_state_dict({**ctx.state_dict(), **plain.state_dict()})  # same weights; context is zero-initialised
    imgs = render(targets_for(2))
    plain.eval(), ctx.eval()
    with torch.no_grad():
        a, b = plain.head_outputs(imgs), ctx.head_outputs(imgs)
    torch.testing.assert_close(a[0], b[0])  # zero context: the same logits
    ctx.train()
    losses = ctx(imgs, targets_for(2))
    assert set(losses) - {"loss_box_cls"} == {"loss_box", "loss_cls", "loss_context"}
    assert losses["loss_context"].item() == pytest.approx(math.log(K + 1), rel=1e-4)  # cross entropy of zero logits
    sum(losses.values()).backward()
    assert ctx.context.fc.weight.grad.abs().sum() > 0
    # a trained context vector shifts every box of an image by the same logits
    ctx.eval()
    with torch.no_grad():
        base = ctx.head_outputs(imgs)[0]
        ctx.context.fc.bias[2] = 5.0
        shifted = ctx.head_outputs(imgs)[0]
    torch.testing.assert_close(shifted - base, torch.zeros_like(base).index_fill_(-1, torch.tensor([2]), 5.0))


def test_image_label_loss_targets_the_classes_present():
    from detect.models.context import image_label_loss

    # columns: background, class 0, class 1
    logits = torch.tensor([[-10.0, 10.0, -10.0], [10.0, -10.0, -10.0], [-10.0, 10.0, 10.0]])
    targets = [{"labels": torch.tensor([0, 0])}, {"labels": torch.zeros(0, dtype=torch.int64)}, {"labels": torch.tensor([1, 0])}]
    assert image_label_loss(logits, targets).item() == pytest.approx(math.log(2) / 3, abs=1e-3)  # the last: 2 classes, 1/2 each
    assert image_label_loss(logits[:2], targets[:2]).item() < 1e-3  # right (the empty image: background)
    assert image_label_loss(-logits[:2], targets[:2]).item() > 10


def test_frozen_stages_get_no_gradient_and_keep_bn_in_eval():
    m = tiny_ssd(freeze_stride=8)
    bb = m.backbone
    assert 0 < bb.frozen_stages < len(bb.stages) - 1
    assert all(s <= 8 for s in bb.stage_strides[: bb.frozen_stages]) and bb.stage_strides[bb.frozen_stages] > 8
    m.train()
    assert not any(mod.training for stage in bb.stages[: bb.frozen_stages] for mod in stage.modules())
    assert bb.stages[bb.frozen_stages].training
    sum(m(render(targets_for(2)), targets_for(2)).values()).backward()
    frozen = [p for p in bb.stages[: bb.frozen_stages].parameters()]
    assert frozen and all(p.grad is None for p in frozen)
    assert any(p.grad is not None for p in bb.stages[bb.frozen_stages].parameters())


def test_context_prior_moves_probability_between_object_classes_only():
    from detect.models.context import ImageContext

    ctx = ImageContext(8, num_classes=3, mode="prior")
    logits = torch.zeros(2, 4)
    assert torch.equal(ctx.bias(logits), torch.zeros(2, 4))  # a uniform prior: no change
    logits[0, 2] = 10.0  # image 0: surely class 1 (column 2)
    b = ctx.bias(logits).detach()
    assert b[:, 0].abs().max() == 0  # background untouched
    assert b[0, 2] == pytest.approx(math.log(3), abs=1e-3) and b[0, 1] < -8.5 and b[0, 3] < -8.5
    # the loss: cross entropy over object classes, images without boxes left out
    targets = [{"labels": torch.tensor([1])}, {"labels": torch.zeros(0, dtype=torch.int64)}]
    assert ctx.loss(logits, targets).item() == pytest.approx(0.0, abs=1e-3)  # right
    assert ctx.loss(torch.zeros(2, 4), targets).item() == pytest.approx(math.log(3), rel=1e-4)
    assert ctx.loss(logits, [targets[1], targets[1]]).item() == 0.0
    model = tiny_ssd(context="prior", context_loss=1.0)
    losses = model(render(targets_for(2)), targets_for(2))
    sum(losses.values()).backward()
    assert model.context.fc.weight.grad.abs().sum() > 0
