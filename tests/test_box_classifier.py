"""The SSD's box classifier: bins, pooling, training RoIs, and its place in the SSD's outputs."""

from __future__ import annotations

import torch

from detect.models.box_classifier import BoxClassifier, bin_boxes, pool_boxes, sample_box_rois
from detect.models.roi_mean import roi_mean_pool


def test_bins_tile_the_box_row_major():
    box = torch.tensor([[4.0, 10.0, 34.0, 70.0]])
    bins = bin_boxes(box, 3)  # (1, 9, 4)
    assert bins.shape == (1, 9, 4)
    area = ((bins[..., 2] - bins[..., 0]) * (bins[..., 3] - bins[..., 1])).sum()
    torch.testing.assert_close(area, torch.tensor(30.0 * 60.0))
    torch.testing.assert_close(bins[0, 0], torch.tensor([4.0, 10.0, 14.0, 30.0]))  # top left
    torch.testing.assert_close(bins[0, 2], torch.tensor([24.0, 10.0, 34.0, 30.0]))  # top right: x moves first
    torch.testing.assert_close(bins[0, 8], torch.tensor([24.0, 50.0, 34.0, 70.0]))
    torch.testing.assert_close(bin_boxes(box, 1)[:, 0], box)


def test_pool_boxes_is_roi_mean_pool_batched():
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 6, 7, 7, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[[0, 0, 224, 224], [10, 20, 130, 200]], [[64, 64, 96, 96], [200, 5, 230, 60]]], dtype=torch.float64)
    out = pool_boxes(feature, boxes, 32.0)  # (2, 2, 6)
    torch.testing.assert_close(out.reshape(4, 6), roi_mean_pool(feature, list(boxes), 32))
    torch.testing.assert_close(out[0, 0], feature[0].mean((1, 2)))


def test_the_head_reads_only_its_own_box():
    """A box's logits do not move when the map changes outside the box (its own features, not the window's)."""
    torch.manual_seed(0)
    head = BoxClassifier(mid_channels=4, deep_channels=8, num_classes=5).eval()
    mid, deep = torch.randn(1, 4, 14, 14), torch.randn(1, 8, 7, 7)
    box = torch.tensor([[[0.0, 0.0, 96.0, 96.0]]])  # cells 0-5 of the stride-16 map, 0-2 of the stride-32 one
    before = head(mid, deep, box, 224.0)
    mid2, deep2 = mid.clone(), deep.clone()
    mid2[..., 6:, :] += 5.0
    mid2[..., :, 6:] -= 3.0
    deep2[..., 3:, :] += 5.0
    after = head(mid2, deep2, box, 224.0)
    torch.testing.assert_close(before, after)
    other = head(mid2, deep2, torch.tensor([[[100.0, 100.0, 200.0, 200.0]]]), 224.0)
    assert not torch.allclose(other, head(mid, deep, torch.tensor([[[100.0, 100.0, 200.0, 200.0]]]), 224.0))


def test_training_rois_are_the_truth_and_the_boxes_that_overlap_it():
    decoded = torch.tensor([[[0.0, 0.0, 100.0, 100.0], [5.0, 5.0, 100.0, 100.0], [150.0, 150.0, 200.0, 200.0],
                             [0.0, 0.0, 30.0, 30.0]]])
    decoded = torch.cat([decoded, decoded])  # (2, 4, 4)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [140.0, 140.0, 200.0, 200.0]]), "labels": torch.tensor([3, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    rois, labels, valid = sample_box_rois(decoded, targets, per_image=8)
    n = int(valid[0].sum())
    assert n == 2 + 3  # the two truths, the two boxes on the first and the one on the second (IoU 0.69)
    torch.testing.assert_close(rois[0, :2], targets[0]["boxes"])
    assert labels[0, :n].tolist()[:2] == [3, 1] and sorted(labels[0, 2:n].tolist()) == [1, 3, 3]
    assert not valid[1].any()  # no truth, no RoI
    _, _, capped = sample_box_rois(decoded, targets, per_image=1)
    assert int(capped[0].sum()) == 3


def _tiny(**kw):
    from detect.config import ModelConfig, Preprocess, SSDConfig
    from detect.models.build import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, pretrained="none", bn="train", ssd=SSDConfig(**kw))
    return build_model(cfg, Preprocess(imgsz=128))


def test_the_ssd_keeps_objectness_and_rereads_the_class_of_its_best_boxes():
    with_head, without = _tiny(box_classifier=True, box_classifier_topk=7, box_classifier_weight=1.0).eval(), _tiny(box_classifier=False).eval()
    assert without.box_classifier is None and with_head.box_classifier is not None
    without.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("box_classifier.")})
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        boxes, scores = with_head.decoded(x)
        boxes0, scores0 = without.decoded(x)
    torch.testing.assert_close(boxes, boxes0)  # boxes are the anchor head's
    obj, obj0 = scores.sum(-1), scores0.sum(-1)  # (B, N)
    top = obj0.topk(7, dim=1).indices
    assert ((obj > 0).sum(1) == 7).all()  # only the 7 most object-like boxes keep a score
    torch.testing.assert_close(obj.gather(1, top), obj0.gather(1, top))  # with the objectness they had
    # their class is the head's: objectness times its softmax
    b = 0
    mid, deep = _maps(with_head, x)
    with torch.no_grad():
        logits = with_head.box_classifier(mid[b:b + 1], deep[b:b + 1], boxes[b:b + 1, top[b]], 128.0)
    torch.testing.assert_close(scores[b, top[b]], obj0[b, top[b], None] * logits[0].softmax(-1), rtol=1e-4, atol=1e-6)


def _maps(model, x):
    with torch.no_grad():
        feats = model.features(x)
    i = model.context_index
    return feats[i - 1], feats[i]


def test_training_adds_the_box_class_loss_and_it_reaches_the_backbone():
    model = _tiny(box_classifier=True).train()
    x = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 8.0, 60.0, 90.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[50.0, 40.0, 120.0, 100.0]]), "labels": torch.tensor([0])}]
    losses = model(x, targets)
    assert set(losses) >= {"loss_box", "loss_cls", "loss_box_cls"}
    losses["loss_box_cls"].backward()
    assert model.box_classifier.fc2.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.heads.parameters())  # RoIs carry no gradient


def test_a_checkpoint_from_before_the_head_rebuilds_without_it(tmp_path):
    from detect.config import ExperimentConfig
    from detect.engine import checkpoint as C

    cfg = ExperimentConfig()
    cfg.model.num_classes, cfg.model.pretrained, cfg.model.backbone_weights = 3, "none", None
    cfg.preprocess.imgsz = 128
    cfg.model.ssd.box_classifier = False
    model = _tiny(box_classifier=False)
    stored = cfg.to_dict()
    del stored["model"]["ssd"]["box_classifier"]  # as written before the field existed
    C.save_checkpoint(tmp_path / "old.pt", config=stored, classes=["a", "b", "c"], ema=None, model=model.state_dict())
    loaded, back, _ = C.load_model(tmp_path / "old.pt")
    assert back.model.ssd.box_classifier is False and loaded.box_classifier is None


def test_the_weight_mixes_the_two_heads_classes():
    """Weight 0: the top boxes keep the anchor head's scores exactly; 0.5: between the two heads."""
    with_head = _tiny(box_classifier=True, box_classifier_topk=5).eval()
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    mid, deep = _maps(with_head, x)
    with torch.no_grad():
        boxes, _ = with_head.decoded(x)
        with_head.box_classifier = None
        _, plain = with_head.decoded(x)
        with_head.box_classifier = _tiny(box_classifier=True).box_classifier.eval()
        head = with_head.box_classifier
        top = plain.sum(-1).topk(5, dim=1).indices[0]
        zero = head.rescore(mid, deep, boxes, plain, 128.0, 5, weight=0.0)
        torch.testing.assert_close(zero[0, top], plain[0, top], rtol=1e-4, atol=1e-7)
        one = head.rescore(mid, deep, boxes, plain, 128.0, 5, weight=1.0)
        half = head.rescore(mid, deep, boxes, plain, 128.0, 5, weight=0.5)
    expect = (zero[0, top] * one[0, top]).sqrt()  # the geometric mean, renormalised to the objectness
    expect = expect / expect.sum(-1, keepdim=True) * plain[0, top].sum(-1, keepdim=True)
    torch.testing.assert_close(half[0, top], expect, rtol=1e-4, atol=1e-7)


def test_a_fine_tune_adds_a_fresh_head_to_a_checkpoint_without_one(tmp_path):
    from detect.config import ExperimentConfig
    from detect.engine.checkpoint import save_checkpoint
    from detect.engine.finetune import detector_config, load_detector_weights, read_detector
    from detect.models.build import build_model

    old = _tiny(box_classifier=False)
    stored = ExperimentConfig()
    stored.model.num_classes, stored.model.pretrained, stored.model.bn, stored.preprocess.imgsz = 3, "none", "train", 128
    path = save_checkpoint(tmp_path / "old.pt", config=stored.to_dict(), classes=["a", "b", "c"], model=old.state_dict())
    cfg = ExperimentConfig()
    cfg.model.ssd.box_classifier = True  # --box-classifier
    detector_config(cfg, read_detector(path), path)
    assert cfg.model.ssd.box_classifier is True
    model = build_model(cfg.model, cfg.preprocess)
    fresh = model.box_classifier.fc1.weight.clone()
    start = load_detector_weights(model, read_detector(path), ["a", "b", "c"], path)
    assert start.new_heads == ["box_classifier"]
    assert start.text().endswith("3 classes kept, box_classifier added fresh (not in the checkpoint)")
    assert torch.equal(model.box_classifier.fc1.weight, fresh)  # as built
    for k, v in old.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    plain = ExperimentConfig()  # not asked: the checkpoint's network as it was
    detector_config(plain, read_detector(path), path)
    assert not plain.model.ssd.box_classifier  # stored as auto (None): built without it
    again = build_model(cfg.model, cfg.preprocess)  # from a checkpoint that has the head: nothing added
    path2 = save_checkpoint(tmp_path / "new.pt", config=cfg.to_dict(), classes=["a", "b", "c"], model=model.state_dict())
    assert load_detector_weights(again, read_detector(path2), ["a", "b", "c"], path2).new_heads == []


def test_the_recipe_adds_the_head_in_its_mosaic_stage():
    from detect.config import ExperimentConfig
    from detect.engine.stages import split

    cfg = ExperimentConfig()
    cfg.train.out, cfg.train.time = "runs/x", 60
    assert cfg.model.ssd.box_classifier is None  # auto: the stage adds it
    for asked, built in ((None, True), (True, True), (False, False)):  # not given, --box-classifier, --no-...
        cfg.model.ssd.box_classifier = asked
        first, second = split(cfg)
        assert not first.model.ssd.box_classifier and second.model.ssd.box_classifier is built, asked
        assert split(first)[1].model.ssd.box_classifier is built  # a resumed first stage plans the same second
    cfg.model.name, cfg.model.ssd.box_classifier = "fast_rcnn", None  # the SSD's head only
    assert split(cfg)[1].model.ssd.box_classifier is None
