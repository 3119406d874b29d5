"""Where the image-level context is pooled (detect/models/context.py): ``image`` adds one vector
per input to every box; ``box`` pools the same trained layer over each box's own area, so an input
holding several product kinds (a shelf, a mosaic, a slice across photos) gives each box the
context of what it covers, and a box covering the whole map gets exactly the image's vector."""

from __future__ import annotations

import pytest
import torch

from detect.config import ModelConfig, Preprocess
from detect.models.build import build_model
from detect.models.context import ImageContext
from detect.models.roi_mean import roi_mean_weights


def _context(mode: str = "add", channels: int = 8, classes: int = 3) -> ImageContext:
    torch.manual_seed(0)
    ctx = ImageContext(channels, classes, mode)
    with torch.no_grad():
        ctx.fc.weight.normal_()
        ctx.fc.bias.normal_()
    return ctx


@pytest.mark.parametrize("mode", ["add", "prior"])
def test_a_box_over_the_whole_map_gets_the_image_context_and_a_box_in_one_cell_that_cell(mode):
    ctx = _context(mode)
    feature = torch.randn(2, 8, 4, 6)  # (B, F, h, w), stride 10: a 60 x 40 input
    boxes = torch.tensor([[0.0, 0.0, 60.0, 40.0],  # the whole map
                          [20.0, 10.0, 30.0, 20.0],  # exactly cell (1, 2)
                          [21.0, 11.0, 29.0, 19.0]])  # inside it
    got = ctx.at_boxes(feature, roi_mean_weights(boxes, (4, 6), 10.0))  # (B, 3, C)
    assert got.shape == (2, 3, 4)
    torch.testing.assert_close(got[:, 0], ctx(feature))
    cell = ctx.fc(feature[:, :, 1, 2])  # (B, C)
    torch.testing.assert_close(got[:, 1], cell)
    torch.testing.assert_close(got[:, 2], cell)
    # the bias works per box as it does per image
    torch.testing.assert_close(ctx.bias(got)[:, 0], ctx.bias(ctx(feature)))


def _two_kind_ssd(pool: str):
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=2, pretrained="none", bn="train", context="add", context_pool=pool)
    model = build_model(cfg, Preprocess(imgsz=128)).eval()
    return model


def test_ssd_box_pool_gives_each_half_of_a_two_kind_input_its_own_context():
    """Left half of the input says class 0, right half class 1 (through a context layer that reads
    one feature channel): with ``image`` pooling every box gets the mix, with ``box`` pooling the
    boxes on the left lean to class 0 and those on the right to class 1."""
    outputs = {}
    for pool in ("image", "box"):
        model = _two_kind_ssd(pool)
        deep = model.context_index
        with torch.no_grad():
            model.context.fc.weight.zero_()
            model.context.fc.bias.zero_()
        images = torch.rand(1, 3, 128, 128)
        feats = model.features(images)
        f = feats[deep]  # (1, C32, 4, 4)
        # make channel 0 of the deepest map +1 on the left half and -1 on the right, by a hook
        sign = torch.ones_like(f[:, :1])
        sign[..., f.shape[-1] // 2:] = -1.0

        def hook(_module, _inputs, output, sign=sign):
            output[deep] = torch.cat([sign * 5.0, output[deep][:, 1:]], 1)
            return output

        handle = model.backbone.register_forward_hook(hook)
        with torch.no_grad():
            model.context.fc.weight[1, 0] = 1.0  # class 0 column reads channel 0
            model.context.fc.weight[2, 0] = -1.0  # class 1 column its opposite
            cls_logits, _, anchors = model.head_outputs(images)
            model.context.fc.weight.zero_()
            plain, _, _ = model.head_outputs(images)
        handle.remove()
        outputs[pool] = (cls_logits - plain)[0], anchors  # (N, C): the context's share
    image_shift, anchors = outputs["image"]
    box_shift, _ = outputs["box"]
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    small = (anchors[:, 2] - anchors[:, 0]) < 40  # boxes well inside one half
    left, right = small & (cx < 50), small & (cx > 78)
    torch.testing.assert_close(image_shift, image_shift[:1].expand_as(image_shift))  # one vector for all boxes
    assert image_shift[0, 1].abs() < 1e-4  # the halves cancel over the image
    assert (box_shift[left, 1] > 4.0).all() and (box_shift[left, 2] < -4.0).all()
    assert (box_shift[right, 1] < -4.0).all() and (box_shift[right, 2] > 4.0).all()


def test_ssd_box_pool_exports_and_trains():
    model = _two_kind_ssd("box").train()
    images = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 90.0]]), "labels": torch.tensor([1])}] * 2
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert model.context.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        boxes, scores = model.decoded(images)
    assert torch.isfinite(scores).all() and scores.shape[:2] == boxes.shape[:2]


def test_fast_rcnn_box_pool_reads_each_roi_area():
    from tests.test_fast_rcnn import _model, _grid_proposals, _scene

    model = _model("file", feature_stride=8, context="add")
    images = torch.stack([_scene(i)[0] for i in range(2)])
    props = [_grid_proposals()[:50], _grid_proposals()[50:80]]
    model.eval()
    with torch.no_grad():
        model.context.fc.weight.normal_()
        feature, semantic = model._feature(images)
        deep = (semantic, images.shape[-1] / semantic.shape[-1], model.context(semantic))
        image_logits, _ = model._heads(feature, deep, props)
        model.context_pool = "box"
        box_logits, _ = model._heads(feature, deep, props)
        model.context_pool = "image"
        ctx_off = model.context.fc.weight.clone()
        model.context.fc.weight.zero_()
        model.context.fc.bias.zero_()
        plain, _ = model._heads(feature, deep[:2] + (model.context(semantic),), props)
        model.context.fc.weight.copy_(ctx_off)
        from detect.models.roi_mean import roi_mean_pool
        want = model.context.fc(roi_mean_pool(semantic, props, deep[1]))  # (80, C)
    torch.testing.assert_close(box_logits - plain, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(box_logits, image_logits)


def test_predictor_takes_a_context_pool_and_refuses_an_unknown_one():
    from detect.errors import UsageError
    from detect.infer.predict import Predictor

    assert Predictor(device="cpu", backend="torch", context_pool="box").model.context_pool == "box"
    with pytest.raises(UsageError, match="context_pool"):
        Predictor(device="cpu", backend="torch", context_pool="boxes")
