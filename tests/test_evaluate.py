"""evaluate() end to end with a fake model and a tiny loader (orig-size mapping, ground truth
from the records, max_det), and ``detect val`` with its collaborators replaced by fakes."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from detect.data.dataset import collate
from detect.engine import evaluate as E
from detect.engine import evaluate_cli as EC
from detect.errors import UsageError
from detect.structures import ImageRecord, Unreadable

S = 64
CLASSES = ["cola", "chips"]


def make_records() -> list[ImageRecord]:
    """Three images of different, non-square sizes; one difficult box; one image without boxes."""
    return [
        ImageRecord("a.jpg", width=96, height=128, boxes=np.array([[10, 20, 50, 100], [60, 4, 90, 40]], np.float32),
                    labels=np.array([0, 1]), difficult=np.array([False, False]), truncated=np.zeros(2, bool)),
        ImageRecord("b.jpg", width=50, height=200, boxes=np.array([[5, 10, 45, 60], [0, 100, 30, 190]], np.float32),
                    labels=np.array([1, 0]), difficult=np.array([False, True]), truncated=np.zeros(2, bool)),
        ImageRecord("c.jpg", width=64, height=64),
    ]


class TinyDataset(torch.utils.data.Dataset):
    """Like DetectionDataset with a stretch resize to S: the image carries its index in pixel (0, 0)."""

    def __init__(self, records, transform=None, drop_last_box: bool = False, skip_unreadable: bool = False, uint8: bool = False):
        self._recs = records  # uint8 accepted like DetectionDataset's; its images stay float (float_images passes them)
        self.drop_last_box = drop_last_box  # imitate a transform that lost a box

    @property
    def records(self):
        return self._recs

    def __len__(self):
        return len(self._recs)

    def __getitem__(self, i):
        r = self._recs[i]
        img = torch.zeros(3, S, S)
        img[0, 0, 0] = i / 255.0
        scale = torch.tensor([S / r.width, S / r.height] * 2)
        keep = len(r) - 1 if self.drop_last_box and len(r) else len(r)
        target = {"boxes": torch.as_tensor(r.boxes[:keep]).float() * scale, "labels": torch.as_tensor(r.labels[:keep]),
                  "difficult": torch.as_tensor(r.difficult[:keep]), "image_id": i,
                  "orig_size": torch.tensor([r.height, r.width])}
        return img, target


class NoRecords(TinyDataset):
    """A dataset that does not expose its records: evaluation must fall back to the targets."""

    records = None


class FakeModel(torch.nn.Module):
    """Eval mode: returns, for the image whose index is in pixel (0, 0), the given boxes (in
    original pixels) mapped into the S x S input, plus ``extra`` low-score junk boxes."""

    def __init__(self, truth: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]], extra: int = 0):
        super().__init__()
        self.truth = truth
        self.extra = extra
        self.score_thresh, self.nms_thresh, self.max_det = 0.01, 0.45, 100  # the detector contract's postprocess settings
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        assert not self.training and not torch.is_grad_enabled()
        out = []
        for img in images:
            boxes, labels, (h, w) = self.truth[int(round(float(img[0, 0, 0]) * 255))]
            b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([S / w, S / h] * 2)
            n = len(b)
            junk = torch.tensor([[1.0, 1.0, 3.0, 3.0]]).repeat(self.extra, 1)
            out.append({"boxes": torch.cat([junk, b]), "scores": torch.cat([torch.linspace(0.2, 0.1, self.extra), torch.full((n,), 0.9)]),
                        "labels": torch.cat([torch.zeros(self.extra, dtype=torch.int64), torch.as_tensor(labels, dtype=torch.int64)])})
        return out


def perfect_model(records, extra: int = 0) -> FakeModel:
    return FakeModel([(r.boxes, r.labels, (r.height, r.width)) for r in records], extra)


def test_perfect_predictions_map_back_to_original_pixels():
    recs = make_records()
    loader = DataLoader(TinyDataset(recs), batch_size=2, collate_fn=collate)
    model = perfect_model(recs).train()
    got = E.collect(model, loader, "cpu")
    assert model.training  # mode restored
    assert got["sizes"] == [(128, 96), (200, 50), (64, 64)] and got["image_ids"] == [0, 1, 2]
    for d, r in zip(got["dets"], recs):
        np.testing.assert_allclose(d["boxes"], r.boxes, atol=1e-3)  # S x S -> h x w, per axis
    m = E.evaluate(model, loader, CLASSES, "cpu")
    assert m["voc_ap50"] == pytest.approx(1.0) and m["voc07_ap50"] == pytest.approx(1.0)
    assert m["coco_ap"] == pytest.approx(1.0) and m["coco_ap50"] == m["coco_ap75"] == pytest.approx(1.0)
    assert m["images"] == 3 and m["instances"] == 3 and m["difficult"] == 1 and m["detections"] == 4
    assert m["per_class"]["chips"]["n_gt"] == 2 and m["per_class"]["cola"]["n_difficult"] == 1
    assert m["per_class"]["cola"]["tp"] == 1 and m["per_class"]["cola"]["fp"] == 0  # difficult hit ignored
    assert m["seconds"] > 0 and m["images_per_s"] > 0


def test_wrong_mapping_would_be_caught():
    # boxes offset by 20% of the box size in x: IoU drops below 0.75, AP75 falls, AP50 stays
    recs = make_records()
    shifted = []
    for r in recs:
        b = r.boxes.copy()
        b[:, [0, 2]] += 0.2 * (b[:, 2] - b[:, 0])[:, None]
        shifted.append((b, r.labels, (r.height, r.width)))
    loader = DataLoader(TinyDataset(recs), batch_size=3, collate_fn=collate)
    m = E.evaluate(FakeModel(shifted), loader, CLASSES, "cpu")
    assert m["voc_ap50"] == pytest.approx(1.0) and m["coco_ap75"] == pytest.approx(0.0)


def test_ground_truth_comes_from_records_else_from_targets():
    recs = make_records()
    model = perfect_model(recs)
    # a transform dropped each image's last box: the records still hold the truth
    m = E.evaluate(model, DataLoader(TinyDataset(recs, drop_last_box=True), batch_size=2, collate_fn=collate), CLASSES, "cpu")
    assert m["instances"] == 3 and m["voc_ap50"] == pytest.approx(1.0)
    # through a Subset too (image_id indexes the full record list)
    sub = Subset(TinyDataset(recs, drop_last_box=True), [1, 2])
    m = E.evaluate(model, DataLoader(sub, batch_size=2, collate_fn=collate), CLASSES, "cpu")
    assert m["images"] == 2 and m["instances"] == 1 and m["difficult"] == 1
    # no records: the targets, mapped back; the dropped boxes are gone, their detections are FPs
    m = E.evaluate(model, DataLoader(NoRecords(recs, drop_last_box=True), batch_size=2, collate_fn=collate), CLASSES, "cpu")
    assert m["instances"] == 2 and m["difficult"] == 0
    assert m["per_class"]["chips"]["fp"] == 1 and m["per_class"]["cola"]["fp"] == 1


def test_max_det_keeps_the_best():
    recs = make_records()
    loader = DataLoader(TinyDataset(recs), batch_size=3, collate_fn=collate)
    model = perfect_model(recs, extra=50)
    got = E.collect(model, loader, "cpu", max_det=2)
    assert [len(d["scores"]) for d in got["dets"]] == [2, 2, 2]
    assert np.all(got["dets"][0]["scores"] == np.float32(0.9))  # the real boxes outrank the junk
    m = E.evaluate(model, loader, CLASSES, "cpu", max_det=1000)
    assert m["coco_max_dets"] == [1, 10, 1000] and m["detections"] == 4 + 3 * 50
    assert m["voc_ap50"] == pytest.approx(1.0)  # the junk ranks below every true box


def test_json_ready_and_table():
    assert E.json_ready({"a": float("nan"), "b": np.float32(0.5), "c": np.arange(2), "d": [np.int64(3)]}) == \
        {"a": None, "b": 0.5, "c": [0, 1], "d": [3]}
    recs = make_records()
    m = E.evaluate(perfect_model(recs), DataLoader(TinyDataset(recs), batch_size=3, collate_fn=collate), CLASSES + ["none"], "cpu")
    table = E.format_table(m)
    assert table.splitlines()[2].startswith("all") and "none" in table and "    -" in table


# ------------------------------------------------------------------------------- detect val


@pytest.fixture
def fake_stack(monkeypatch):
    """Replace checkpoint loading, data resolution and the dataset with fakes."""
    from detect.config import ExperimentConfig

    recs = make_records()
    state = SimpleNamespace(cache=SimpleNamespace(classes=list(CLASSES), records=recs, problems=[]), model=perfect_model(recs))
    cfg = ExperimentConfig()
    cfg.preprocess.imgsz = S

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)

    module("detect.engine.checkpoint", load_model=lambda path, device: (state.model, cfg, list(CLASSES)))
    module("detect.data.spec", resolve_data=lambda data, split, **kw: state.cache,
           input_files=lambda data, cache=None, source=None: [data])
    module("detect.data.dataset", DetectionDataset=TinyDataset, collate=collate)
    module("detect.data.transforms", eval_transform=lambda imgsz, resize="letterbox": None)
    return state


def val_args(tmp_path, **kw):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    args = dict(weights=str(weights), data="d", split="val", json=str(tmp_path / "out" / "val.json"), plots=None,
                batch=2, device="cpu", max_det=None, workers=0)
    args.update(kw)
    return SimpleNamespace(**args)


def test_cmd_val_writes_json_table_and_plots(tmp_path, fake_stack, capsys):
    assert EC.cmd_val(val_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "cola" in out and "AP50" in out
    data = json.loads((tmp_path / "out" / "val.json").read_text())
    for key in ("voc_ap50", "voc07_ap50", "coco_ap", "coco_ap50", "coco_ap75", "coco_ar", "per_class", "images",
                "seconds", "confusion_matrix", "classes", "weights", "split", "max_det"):
        assert key in data, key
    assert data["voc_ap50"] == pytest.approx(1.0) and data["max_det"] == 300
    assert set(data["per_class"]["cola"]) >= {"ap50", "ap50_07", "coco_ap", "n_gt", "n_det", "precision", "recall"}
    assert np.array(data["confusion_matrix"]["matrix"]).shape == (3, 3)
    assert data["errors"]["ap50"] == pytest.approx(1.0) and set(data["errors"]["dap"]) == {
        "cls", "loc", "both", "dupe", "bkg", "missed"}
    assert "errors (TIDE" in out and "weakest classes" in out
    for name in ("pr_curve.png", "confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_ap.png", "errors.png"):
        assert (tmp_path / "out" / "val-val" / name).stat().st_size > 5000  # plots per split
    assert json.loads((tmp_path / "out" / "val-val" / "val.json").read_text())["voc_ap50"] == pytest.approx(1.0)


def test_cmd_val_remaps_class_order_and_reports_problems(tmp_path, fake_stack):
    recs = make_records()
    # the data lists the classes the other way round: labels are indices into that list
    swapped = [ImageRecord(r.image, r.width, r.height, r.boxes, 1 - r.labels, r.difficult, r.truncated) for r in recs]
    fake_stack.cache = SimpleNamespace(classes=CLASSES[::-1], records=swapped, problems=["x.xml: [degenerate_box] ..."])
    assert EC.cmd_val(val_args(tmp_path, plots=str(tmp_path / "plots"), max_det=1000)) == 1  # done, with problems
    data = json.loads((tmp_path / "out" / "val.json").read_text())
    assert data["voc_ap50"] == pytest.approx(1.0) and data["coco_max_dets"] == [1, 10, 1000] and data["problems"] == 1
    assert fake_stack.model.max_det == 1000  # the model got the larger cap
    assert (tmp_path / "plots" / "pr_curve.png").is_file()


def test_cmd_val_usage_errors(tmp_path, fake_stack):
    with pytest.raises(UsageError, match="not found"):
        EC.cmd_val(val_args(tmp_path, weights=str(tmp_path / "missing.pt")))
    with pytest.raises(UsageError, match="--max-det"):
        EC.cmd_val(val_args(tmp_path, max_det=0))
    fake_stack.cache = SimpleNamespace(classes=["cola", "soap"], records=make_records(), problems=[])
    with pytest.raises(UsageError, match=r"only in the data \['soap'\]"):
        EC.cmd_val(val_args(tmp_path))
    fake_stack.cache = SimpleNamespace(classes=list(CLASSES), records=[], problems=[])
    with pytest.raises(UsageError, match="no images"):
        EC.cmd_val(val_args(tmp_path))
    assert not (tmp_path / "out" / "val.json").exists()


def test_cmd_val_stops_cleanly_on_an_unreadable_image(tmp_path, fake_stack, monkeypatch, capsys):
    class Broken(TinyDataset):
        def __getitem__(self, i):
            if i == 1:
                raise OSError("b.jpg: not a decodable image")
            return super().__getitem__(i)

    monkeypatch.setattr(sys.modules["detect.data.dataset"], "DetectionDataset", Broken)
    assert EC.cmd_val(val_args(tmp_path)) == 1
    assert "b.jpg: not a decodable image" in capsys.readouterr().err
    assert not (tmp_path / "out" / "val.json").exists()


def test_real_dataset_and_eval_transform_round_trip(tmp_path):
    """The real DetectionDataset + eval_transform (albumentations stretch): predictions and the
    targets mapped back land on the annotated boxes, with records and without them."""
    cv2 = pytest.importorskip("cv2")
    from detect.data.dataset import DetectionDataset, collate as real_collate
    from detect.data.transforms import eval_transform

    recs = make_records()
    for i, r in enumerate(recs):  # image i is a flat grey of value 40 * (i + 1): survives the resize
        path = tmp_path / r.image
        cv2.imwrite(str(path), np.full((r.height, r.width, 3), 40 * (i + 1), np.uint8))
        r.image = str(path)

    class GreyCoded(FakeModel):
        def forward(self, images):
            idx = (images[:, 0, S // 2, S // 2] * 255 / 40).round().long() - 1
            marked = images.clone()
            marked[:, 0, 0, 0] = idx.float() / 255.0
            return super().forward(marked)

    model = GreyCoded([(r.boxes, r.labels, (r.height, r.width)) for r in recs])
    ds = DetectionDataset(recs, eval_transform(S, "stretch"))  # FakeModel maps boxes by stretching
    m = E.evaluate(model, DataLoader(ds, batch_size=2, collate_fn=real_collate), CLASSES, "cpu")
    assert m["coco_ap"] == pytest.approx(1.0) and m["instances"] == 3 and m["difficult"] == 1

    class Hidden(torch.utils.data.Dataset):  # no .records: ground truth from the resized targets
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    got = E.collect(model, DataLoader(Hidden(), batch_size=3, collate_fn=real_collate), "cpu")
    for g, r in zip(got["gts"], recs):
        np.testing.assert_allclose(g["boxes"], r.boxes, atol=1e-3)
        np.testing.assert_array_equal(g["difficult"], r.difficult)
    m = E.compute_metrics(got["dets"], got["gts"], got["sizes"], CLASSES)[0]
    assert m["coco_ap"] == pytest.approx(1.0)


def test_images_unreadable_during_evaluation_are_skipped_and_listed(tmp_path):
    """Training evaluates with skip_unreadable: a val image deleted since the cache was built
    (alone in its batch, or beside a readable one) is left out and listed, not a crash."""
    from detect.data.dataset import collate as real_collate

    class Skipping(TinyDataset):  # what DetectionDataset(skip_unreadable=True) returns for b.jpg
        def __getitem__(self, i):
            return Unreadable(i, "b.jpg", "file not found") if i == 1 else super().__getitem__(i)

    recs = make_records()
    for batch in (1, 2):
        loader = DataLoader(Skipping(recs), batch_size=batch, collate_fn=real_collate)
        got = E.collect(perfect_model(recs), loader, "cpu")
        assert got["image_ids"] == [0, 2] and got["unreadable"] == ["b.jpg: file not found"]
    m = E.evaluate(perfect_model(recs), loader, CLASSES, "cpu")
    assert m["images"] == 2 and m["unreadable"] == ["b.jpg: file not found"]


def _write_voc(root):
    """A 3-image VOC folder (two classes, one difficult box, non-square images)."""
    import cv2

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("cola\nchips\n")
    for i, (w, h) in enumerate([(96, 128), (120, 80), (64, 64)]):
        cv2.imwrite(str(root / f"JPEGImages/im{i}.jpg"), np.full((h, w, 3), 60 * i, np.uint8))
        objects = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, d, b in (("cola", 0, (5, 5, 40, 60)), ("chips", i % 2, (30, 10, 60, 50))))
        (root / f"Annotations/im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    (root / "ImageSets/Main/val.txt").write_text("im0\nim1\nim2\n")


def test_detect_val_end_to_end_with_a_real_checkpoint(tmp_path):
    """`detect val` through the CLI: a real (untrained) SSD checkpoint on a tiny VOC folder."""
    from detect.cli import main
    from detect.config import ExperimentConfig
    from detect.engine.checkpoint import save_checkpoint
    from detect.models.build import build_model

    _write_voc(tmp_path / "voc")
    cfg = ExperimentConfig()
    cfg.model.pretrained, cfg.model.num_classes, cfg.preprocess.imgsz = "none", 2, 64
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.preprocess)
    save_checkpoint(tmp_path / "w.pt", config=cfg.to_dict(), classes=["cola", "chips"], model=model.state_dict())
    out = tmp_path / "val" / "metrics.json"
    rc = main(["val", "--weights", str(tmp_path / "w.pt"), "--data", str(tmp_path / "voc"), "--json", str(out),
               "--device", "cpu", "--workers", "0", "--batch", "2"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["images"] == 3 and data["instances"] == 5 and data["difficult"] == 1
    assert data["coco_max_dets"] == [1, 10, cfg.model.max_det] and data["classes"] == ["cola", "chips"]
    for key in ("voc_ap50", "voc07_ap50", "coco_ap", "coco_ap50", "coco_ap75"):
        assert data[key] is None or 0.0 <= data[key] <= 1.0, key
    for name in ("pr_curve.png", "per_class_ap.png", "val_mosaic.png"):
        assert (tmp_path / "val" / "val-val" / name).stat().st_size > 5000, name
    assert main(["val", "--weights", str(tmp_path / "w.pt"), "--data", str(tmp_path / "voc"), "--split", "test",
                 "--device", "cpu", "--plots", str(tmp_path / "p")]) == 2  # no such split: usage error


@pytest.mark.gpu
def test_evaluate_on_cuda_with_amp_matches_cpu():
    """Device path: batches moved to CUDA, autocast fp16, outputs (fp16 boxes) brought back."""
    recs = make_records()

    class OnDevice(FakeModel):
        def forward(self, images):
            with torch.autocast("cuda", enabled=False):
                out = super().forward(images.float().cpu())
            return [{"boxes": o["boxes"].to(images.device).half(), "scores": o["scores"].to(images.device).half(),
                     "labels": o["labels"].to(images.device)} for o in out]

    loader = DataLoader(TinyDataset(recs), batch_size=2, collate_fn=collate)
    model = OnDevice([(r.boxes, r.labels, (r.height, r.width)) for r in recs], extra=20).cuda()
    on_gpu = E.evaluate(model, loader, CLASSES, "cuda", max_det=1000, amp=True)
    on_cpu = E.evaluate(perfect_model(recs, extra=20), loader, CLASSES, "cpu", max_det=1000)
    assert on_gpu["voc_ap50"] == pytest.approx(on_cpu["voc_ap50"]) == pytest.approx(1.0)
    assert on_gpu["coco_ap50"] == pytest.approx(1.0) and on_gpu["coco_ap"] > 0.9  # fp16 boxes: IoU ~0.999
    assert on_gpu["detections"] == on_cpu["detections"]


def test_val_json_is_written_when_a_plot_fails(tmp_path, fake_stack, monkeypatch, capsys):
    """Issue 24 item 14: a plot that failed (bad_alloc on a 20,000-character class name) left no val.json."""
    import detect.engine.report as R

    def fail(*a, **k):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(R, "write_val_plots", fail)
    assert EC.cmd_val(val_args(tmp_path)) == 0
    assert json.loads((tmp_path / "out" / "val.json").read_text())["plots"] == {}
    assert "plots could not be drawn (MemoryError" in capsys.readouterr().err
