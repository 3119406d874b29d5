"""Synthetic shelves: determinism, sane boxes, a standard VOC dataset that our parser reads
back exactly, and the CLI's exit codes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from detect.data.synth import CLASSES, render_dataset, render_scene, split_indices
from detect.data.formats.voc import parse_voc


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "shelves"
    render_dataset(out, 12, seed=5, size=128, progress=False)
    return out


def test_render_scene_is_deterministic():
    a, b = render_scene(3, 7, 160), render_scene(3, 7, 160)
    assert a.image.tobytes() == b.image.tobytes()
    for key in ("boxes", "labels", "difficult", "truncated"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    c, d = render_scene(4, 7, 160), render_scene(3, 8, 160)
    assert c.image.tobytes() != a.image.tobytes() and d.image.tobytes() != a.image.tobytes()


@pytest.mark.parametrize("kind", ["shelf", "checkout"])
def test_scenes_have_valid_visible_boxes(kind):
    counts, seen = [], set()
    for i in range(12):
        s = render_scene(11, i, 160, kind=kind)
        H, W = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3 and max(H, W) == 160
        n = len(s.boxes)
        assert s.boxes.shape == (n, 4) and s.labels.shape == s.difficult.shape == s.truncated.shape == (n,)
        assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64
        assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2] <= W).all() and (s.boxes[:, 3] <= H).all()
        assert (s.boxes[:, 2:] - s.boxes[:, :2] >= 2).all()  # VOC 1-based xmin < xmax
        assert ((s.labels >= 0) & (s.labels < len(CLASSES))).all()
        # difficult is about visibility: every product under 30% visible is difficult
        assert s.difficult[s.visible < 0.3].all()
        counts.append(n)
        seen.update(s.labels.tolist())
        # a box is the visible extent: it is not mostly background-coloured filler, i.e. the
        # pixels inside differ from a flat colour (products are printed, not blank)
        for x1, y1, x2, y2 in s.boxes[~s.difficult].astype(int):
            patch = s.image[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
            assert patch.std(0).max() > 8
    assert min(counts) >= 1 and max(counts) <= 25 and np.mean(counts) >= 4
    assert len(seen) >= 7  # most classes appear in a dozen scenes


def test_product_sizes_are_learnable():
    """Most non-difficult products span 12-60% of the image height (an SSD at 320 px sees them)."""
    rel = []
    for i in range(20):
        s = render_scene(0, i, 160)
        keep = ~s.difficult
        rel.extend(((s.boxes[keep, 3] - s.boxes[keep, 1]) / s.image.shape[0]).tolist())
    rel = np.asarray(rel)
    assert np.mean((rel > 0.12) & (rel < 0.6)) > 0.75


def test_dataset_layout_and_determinism(synth_dir, tmp_path):
    stems = sorted(p.stem for p in (synth_dir / "JPEGImages").glob("*.jpg"))
    assert len(stems) == 12 and stems == sorted(p.stem for p in (synth_dir / "Annotations").glob("*.xml"))
    assert (synth_dir / "classes.txt").read_text().split() == CLASSES
    parts = {s: (synth_dir / "ImageSets/Main" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == stems  # disjoint and complete
    assert [len(v) for v in parts.values()] == [10, 1, 1]
    again = tmp_path / "again"
    render_dataset(again, 12, seed=5, size=128, workers=2, progress=False)  # other worker count, same bytes
    assert tree_digest(again) == tree_digest(synth_dir)
    other = tmp_path / "other"
    render_dataset(other, 12, seed=6, size=128, progress=False)
    a, b = tree_digest(synth_dir), tree_digest(other)
    assert all(a[k] != b[k] for k in a if k.startswith("JPEGImages"))


def test_voc_parser_reads_back_the_rendered_boxes(synth_dir):
    for i in (0, 5, 11):
        stem = f"{i:06d}"
        rec, problems = parse_voc(synth_dir / "Annotations" / f"{stem}.xml", CLASSES, synth_dir / "JPEGImages")
        assert problems == [] and rec is not None
        scene = render_scene(5, i, 128)
        assert (rec.width, rec.height) == scene.image.shape[1::-1]
        assert Path(rec.image).name == f"{stem}.jpg"
        np.testing.assert_array_equal(rec.boxes, scene.boxes)  # 0-based -> VOC 1-based -> 0-based
        np.testing.assert_array_equal(rec.labels, scene.labels)
        np.testing.assert_array_equal(rec.difficult, scene.difficult)
        np.testing.assert_array_equal(rec.truncated, scene.truncated)


def test_split_indices():
    s = split_indices(10, 0, (0.8, 0.1, 0.1))
    assert [len(s[k]) for k in ("train", "val", "test")] == [8, 1, 1]
    assert sorted(sum(s.values(), [])) == list(range(10))
    assert split_indices(10, 0, (8, 1, 1)) == s
    with pytest.raises(ValueError):
        split_indices(10, 0, (1, -1, 0))


def test_cli_exit_codes(tmp_path, capsys):
    from detect.cli import main

    def synth(out, *opts) -> int:
        try:
            return main(["synth", str(out), "--images", "3", "--size", "64", *opts])
        except SystemExit as e:  # a bad option value: argparse's usage error (detect.checks)
            return e.code

    out = tmp_path / "ds"
    assert synth(out) == 0
    assert synth(out, "--images", "4") == 0  # an earlier synthetic dataset is replaced
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert synth(foreign) == 2 and (foreign / "keep.txt").read_text() == "mine"
    assert synth(tmp_path / "x", "--images", "0") == 2
    assert synth(tmp_path / "x", "--splits", "a,b") == 2
    assert synth(tmp_path / "x", "--size", "8") == 2
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    err = capsys.readouterr().err
    assert "not a synthetic dataset" in err and "--splits" in err


def test_cli_entry_point(tmp_path, capsys):
    from detect.cli import main

    out = tmp_path / "cli"
    assert main(["synth", str(out), "--images", "2", "--seed", "9", "--size", "64", "--workers", "1"]) == 0
    assert "wrote 2 images" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == ["000000.xml", "000001.xml"]
