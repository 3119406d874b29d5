"""Proposal caches (``detect proposals``): round trip, incremental update, recall printout,
images without proposals; proposal files in the documented formats; the proposal dataset."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect.cli import main
from detect.data.cache.cache_file import load_cache
from detect.data.dataset import DetectionDataset
from detect.data.proposal_dataset import ProposalDataset
from detect.data.proposal_files import ProposalFileError, load_proposals, read_proposal_cache
from detect.data.transforms import eval_transform, train_transform
from detect.data.cache.xml2pkl import build_cache
from detect.engine.proposal_cache import build_proposal_cache
from detect.models.selective_search import proposal_recall

BOXES = {"a": (8, 10, 40, 50), "b": (30, 4, 70, 36), "c": (10, 20, 60, 58), "d": (50, 40, 78, 62)}


def _voc(root: Path) -> Path:
    """Four 80x64 images, one painted product each, as a VOC folder; returns the cache path."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    rng = np.random.default_rng(0)
    for i, (stem, (x1, y1, x2, y2)) in enumerate(BOXES.items()):
        img = rng.integers(20, 60, (64, 80, 3), dtype=np.uint8)
        img[y1:y2, x1:x2] = (40 * i, 200, 255 - 40 * i)
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.png"), img)
        # VOC corners are 1-based inclusive: xyxy [x1, y1, x2, y2) is written as x1+1 .. x2
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>80</width><height>64</height><depth>3</depth></size>"
            f"<object><name>{'cup' if i % 2 else 'box'}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
            f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>"
        )
    out = root / "cache.pkl"
    build_cache(root / "Annotations", out, images=root / "JPEGImages", workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return _voc(tmp_path_factory.mktemp("voc"))


def test_cache_round_trip_and_recall_printout(voc: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "props.pkl"
    rc = main(["proposals", str(voc), "-o", str(out), "--mode", "fast", "--max", "300", "--resize", "0", "--workers", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "4 images, 4 searched, 0 reused" in printed
    assert "top 100" in printed and "top 2000" in printed and "IoU 0.5" in printed and "IoU 0.7" in printed
    data = read_proposal_cache(out)
    assert data["method"] == {"name": "selective_search", "mode": "fast", "max": 300, "resize": 0}
    assert data["annotations"]["path"] == os.path.abspath(voc)
    ps = load_proposals(out)
    cache = load_cache(voc)
    for r in cache.records:
        boxes = ps.get(r.image)
        assert boxes is not None and boxes.dtype == np.float32 and 0 < len(boxes) <= 300
        assert (boxes[:, 2] > boxes[:, 0]).all() and boxes[:, 2].max() <= 80 and boxes[:, 3].max() <= 64
    # the painted products are found, so recall at IoU 0.7 is printed as 1.000 for the top 300
    rec = proposal_recall([ps.get(r.image) for r in cache.records], [r.boxes for r in cache.records], (300,), (0.7,))
    assert rec[(300, 0.7)] == 1.0
    assert printed.split("IoU 0.7")[1].split()[1] == "1.000"


def test_incremental_update_recomputes_only_the_touched_image(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "props.pkl"
    first = build_proposal_cache(str(voc), str(out), max_boxes=50, resize=0, workers=1)
    assert len(first.computed) == 4 and first.reused == 0
    mtime = out.stat().st_mtime_ns
    again = build_proposal_cache(str(voc), str(out), max_boxes=50, resize=0, workers=1)
    assert again.computed == [] and again.reused == 4
    assert out.stat().st_mtime_ns == mtime  # nothing changed: not rewritten
    touched = load_cache(voc).records[2].image
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = build_proposal_cache(str(voc), str(out), max_boxes=50, resize=0, workers=1)
    assert third.computed == [touched] and third.reused == 3
    # other settings: everything again
    fourth = build_proposal_cache(str(voc), str(out), max_boxes=20, resize=0, workers=1)
    assert len(fourth.computed) == 4
    assert all(len(b) <= 20 for b in load_proposals(out).boxes.values())


def test_unreadable_image_gets_no_proposals_and_exit_1(tmp_path: Path, capsys) -> None:
    cache = _voc(tmp_path / "voc")
    bad = load_cache(cache).records[0].image
    Path(bad).write_bytes(b"not an image")
    out = tmp_path / "p.pkl"
    assert main(["proposals", str(cache), "-o", str(out), "--resize", "0", "--workers", "1", "--no-progress"]) == 1
    assert "not a decodable image" in capsys.readouterr().err
    assert len(load_proposals(out).get(bad)) == 0
    assert main(["proposals", str(tmp_path / "missing.pkl"), "-o", str(out)]) == 2


def test_output_that_is_an_input_or_a_device_is_refused(tmp_path: Path, capsys) -> None:
    cache = _voc(tmp_path / "voc")
    before = cache.read_bytes()
    image = load_cache(cache).records[0].image
    image_bytes = Path(image).read_bytes()
    for out in (cache, image):  # the proposal cache replaced the annotation cache it was made from
        assert main(["proposals", str(cache), "-o", str(out), "--workers", "1", "--no-progress"]) == 2
    assert cache.read_bytes() == before and Path(image).read_bytes() == image_bytes
    os.mkfifo(tmp_path / "fifo.pkl")
    assert main(["proposals", str(cache), "-o", str(tmp_path / "fifo.pkl"), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{cache} is one of the inputs" in err and f"{image} is one of the inputs" in err and "is a FIFO" in err


def test_damaged_or_malicious_proposal_cache_is_refused(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.pkl"
    build_proposal_cache(str(voc), str(out), max_boxes=10, resize=0, workers=1)
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(ProposalFileError, match="truncated"):
        load_proposals(out)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # os.system('echo pwned') if unpickled freely
    with pytest.raises(ProposalFileError, match="refusing"):
        load_proposals(evil)
    # a broken cache is rebuilt rather than half-read
    rebuilt = build_proposal_cache(str(voc), str(out), max_boxes=10, resize=0, workers=1)
    assert len(rebuilt.computed) == 4


def test_proposal_files_in_each_documented_format(tmp_path: Path) -> None:
    boxes = np.array([[1, 2, 30, 40], [5, 5, 10, 10]], np.float32)
    scored = np.array([[0, 0, 5, 5, 0.1], [1, 1, 9, 9, 0.9]], np.float32)
    np.savez(tmp_path / "p.npz", IMG1=boxes, IMG2=scored)
    (tmp_path / "p.json").write_text(json.dumps({"/data/x/IMG1.jpg": boxes.tolist(), "IMG2": []}))
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump({"IMG1": {"boxes": boxes, "scores": np.array([0.5, 0.7], np.float32)}}, f)
    npz = load_proposals(tmp_path / "p.npz")
    np.testing.assert_array_equal(npz.get("/anywhere/IMG1.png"), boxes)  # matched by stem
    np.testing.assert_array_equal(npz.get("IMG2.jpg"), scored[::-1, :4])  # sorted by score
    js = load_proposals(tmp_path / "p.json")
    np.testing.assert_array_equal(js.get("/data/x/IMG1.jpg"), boxes)
    assert js.get("IMG2.jpg").shape == (0, 4) and js.get("IMG3.jpg") is None
    pk = load_proposals(tmp_path / "p.pkl")
    np.testing.assert_array_equal(pk.get("IMG1.jpg"), boxes[::-1])
    (tmp_path / "bad.json").write_text(json.dumps({"IMG1": [[1, 2, 3]]}))
    with pytest.raises(ProposalFileError, match="bad.json: IMG1: expected"):
        load_proposals(tmp_path / "bad.json")


def test_proposal_dataset_maps_proposals_through_the_transform(voc: Path, tmp_path: Path) -> None:
    cache = load_cache(voc)
    r0, r1 = cache.records[0], cache.records[1]
    props = {r0.image: np.array([[0, 0, 80, 64], [8, 10, 40, 50], [-5, -5, 2, 2]], np.float32),
             Path(r1.image).stem: np.zeros((0, 4), np.float32)}
    np.savez(tmp_path / "mine.npz", **{Path(r0.image).stem: props[r0.image], Path(r1.image).stem: props[Path(r1.image).stem]})
    ds = ProposalDataset(cache.records, eval_transform(32), str(tmp_path / "mine.npz"))
    assert ds.missing == [cache.records[2].image, cache.records[3].image]
    img, t = ds[0]
    assert img.shape == (3, 32, 32)
    sx = sy = 32 / 80  # letterboxed: one factor, the 80 x 64 image lands in 32 x 26 (25.6 rounded)
    sy = 26 / 64
    expected = torch.tensor([[0, 0, 80 * sx, 64 * sy], [8 * sx, 10 * sy, 40 * sx, 50 * sy], [0, 0, 2 * sx, 2 * sy]])
    torch.testing.assert_close(t["proposals"], expected)
    torch.testing.assert_close(t["boxes"], expected[1:2])  # the ground truth is untouched by the extra boxes
    assert t["labels"].tolist() == [0]
    _, t1 = ds[1]
    assert t1["proposals"].shape == (0, 4) and len(t1["boxes"]) == 1
    _, t2 = ds[2]  # no entry at all: no proposals
    assert t2["proposals"].shape == (0, 4)
    # training augmentation: proposals stay inside the image and flips move them with the box
    aug = ProposalDataset(cache.records[:1], train_transform(32, 1.0, 0.3), str(tmp_path / "mine.npz"))
    for _ in range(5):
        _, ta = aug[0]
        p = ta["proposals"]
        assert p.min() >= 0 and p.max() <= 32 and len(ta["boxes"]) <= 1
        if len(ta["boxes"]):  # the ground truth box is also proposal 1: both moved the same way
            assert (torch.isclose(p, ta["boxes"][0], atol=1e-3).all(dim=1)).any()


def test_a_fast_rcnn_that_takes_proposals_gets_them_from_the_data_config(voc: Path, tmp_path: Path) -> None:
    from detect.config import DataConfig, ExperimentConfig, FastRCNNConfig, ModelConfig, Preprocess
    from detect.engine.datasets import eval_dataset
    from detect.errors import UsageError

    cache = load_cache(voc)

    def cfg(name: str, proposals: str = "rpn", **data) -> ExperimentConfig:
        return ExperimentConfig(model=ModelConfig(name=name, fast_rcnn=FastRCNNConfig(proposals=proposals)),
                                data=DataConfig(**data), preprocess=Preprocess(imgsz=32))

    for plain in (cfg("ssd", proposal_file="ignored.pkl"), cfg("fast_rcnn", "rpn", proposal_file="ignored.pkl")):
        assert type(eval_dataset(cache.records, plain)) is DetectionDataset
    with pytest.raises(UsageError, match="--proposal-file"):
        eval_dataset(cache.records, cfg("fast_rcnn", "selective_search"))
    out = tmp_path / "p.pkl"
    build_proposal_cache(str(voc), str(out), max_boxes=30, resize=0, workers=1)
    ds = eval_dataset(cache.records, cfg("fast_rcnn", "selective_search", proposal_file=str(out), max_proposals=5))
    assert isinstance(ds, ProposalDataset) and ds.missing == []
    assert 0 < len(ds[0][1]["proposals"]) <= 5
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"nothing_here": []}))
    with pytest.raises(ProposalFileError, match="none of the 4 images"):
        ProposalDataset(cache.records, None, str(other))
