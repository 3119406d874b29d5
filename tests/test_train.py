"""Trainer: resume = uninterrupted run, NaN/inf steps reported, run folders, CLI config
precedence and exit codes, class balancing, unreadable images, the run's pictures. Tiny model and
data (tiny_detector); one epoch's parts (loop, optimizer groups, schedule, EMA) are test_loop.py."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

import pytest
import torch
import yaml
from tiny_detector import NaNOnImage, assert_same_state, tiny_config, tiny_data, tiny_eval, tiny_model

from detect.cli import build_parser, main
from detect.config import ExperimentConfig
from detect.engine import train as T
from detect.engine.run_eval import epoch_eval
from detect.engine import train_cli as TC
from detect.engine.checkpoint import load_checkpoint
from detect.engine.loader import EpochShardSampler


def _run(cfg, **kw):
    return T.train(cfg, progress=False, data_fn=kw.pop("data_fn", tiny_data()), model_fn=kw.pop("model_fn", tiny_model),
                   eval_fn=tiny_eval, **kw)


def test_resume_repeats_uninterrupted_run(tmp_path):
    # straight: 3 epochs, no workers. split: killed in epoch 2 (after its training, before its
    # checkpoint), then --resume with a persistent worker process: the augmentation is seeded
    # per sample, so the worker must not matter, and the run repeats epoch 2 from last.pt
    straight = _run(tiny_config(tmp_path / "a", epochs=3, seed=7))
    calls = []

    def killed_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return tiny_eval(*args)

    with pytest.raises(KeyboardInterrupt):
        T.train(tiny_config(tmp_path / "b", epochs=3, seed=7), progress=False, data_fn=tiny_data(),
                model_fn=tiny_model, eval_fn=killed_in_epoch_2)
    first = load_checkpoint(tmp_path / "b" / "last.pt")
    assert first["epoch"] == 1 and straight["epochs"] == 3
    cfg = tiny_config(tmp_path / "b", epochs=3, seed=7, resume=True)
    cfg.data.workers = 1
    resumed = _run(cfg)
    assert resumed["epochs"] == 3
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert_same_state(a["model"], b["model"], atol=1e-6)
    assert_same_state(a["ema"]["model"], b["ema"]["model"], atol=1e-6)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 3 * 4
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 12
    for ra, rb in zip(a["metrics"], b["metrics"]):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)
    # a different seed gives a different epoch 1 (the comparison above can fail)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        T.train(tiny_config(tmp_path / "c", epochs=3, seed=8), progress=False, data_fn=tiny_data(),
                model_fn=tiny_model, eval_fn=killed_in_epoch_2)
    other = load_checkpoint(tmp_path / "c" / "last.pt")
    assert (other["model"]["cls.weight"] - first["model"]["cls.weight"]).abs().max() > 1e-4
    # CSV has one row per epoch, resumed rows included; best.pt and the plot exist
    lines = (tmp_path / "b" / "results.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,train_loss") and [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    assert (tmp_path / "b" / "best.pt").is_file() and (tmp_path / "b" / "results.png").is_file()
    saved = ExperimentConfig.load_yaml(tmp_path / "b" / "config.yaml")
    assert saved.model.num_classes == 3 and saved.train.epochs == 3


def test_nonfinite_loss_skips_step_and_is_reported(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", epochs=2, clip_grad=0.0)
    res = _run(cfg, model_fn=lambda c: NaNOnImage(c.model.num_classes, c.preprocess.imgsz))
    # images 5 and 9 are in two (possibly the same) batches of each epoch
    assert 2 <= res["nonfinite_loss"] <= 4 and res["skipped"] == res["nonfinite_loss"]
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    for sd in (ck["model"], ck["ema"]["model"]):
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    assert all(math.isfinite(r["train_loss"]) for r in ck["metrics"])
    assert "non-finite loss skipped" in capsys.readouterr().err


def _args(**kw) -> argparse.Namespace:
    ns = build_parser().parse_args(["train", "--no-progress"])  # every option as `detect train` leaves it
    ns.__dict__.update(kw)
    return ns


def test_cli_overrides_yaml_overrides_defaults(tmp_path):
    y = tmp_path / "exp.yaml"
    y.write_text(yaml.safe_dump({"train": {"epochs": 7, "lr": 0.5, "optimizer": "adamw"}, "preprocess": {"imgsz": 256}}))
    cfg = TC.config_from_args(_args(config=str(y), lr=0.1, imgsz=160, ema=False, data="d.yaml", out=str(tmp_path / "r")))
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.optimizer, cfg.preprocess.imgsz) == (7, 0.1, "adamw", 160)
    assert cfg.train.ema is False and cfg.data.data == "d.yaml" and cfg.train.momentum == 0.9  # default kept


def test_cmd_train_exit_codes(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--resume"]) == 2
    assert "detect train: error: nothing to resume" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochz: 3}\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "epochz" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2  # no --data
    assert "--data" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run_and_extends_a_finished_one(tmp_path):
    seen = []
    res = _run(tiny_config(tmp_path / "r", epochs=3), on_epoch_end=lambda e, row: seen.append((e, row)) or e == 1)
    assert res["epochs"] == 1 and seen[0][0] == 1 and "voc_ap50" in seen[0][1]  # stopped early, as asked
    with pytest.raises(T.UsageError, match="already holds a run"):
        _run(tiny_config(tmp_path / "r", epochs=1))
    res = _run(tiny_config(tmp_path / "r", epochs=2, resume=True))  # extend by one epoch
    assert res["epochs"] == 2 and load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 2
    # `detect train --resume --out r --epochs 5`: the run's config, with the options given
    cfg = TC.config_from_args(_args(out=str(tmp_path / "r"), resume=True, epochs=5))
    assert (cfg.train.epochs, cfg.train.lr, cfg.preprocess.imgsz, cfg.train.resume) == (5, 0.05, 32, True)


def test_runs_without_out_go_to_runs_train_then_train2_and_saved_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert TC.next_run_dir("runs/train") == Path("runs/train")
    (tmp_path / "runs" / "train").mkdir(parents=True)
    assert TC.next_run_dir("runs/train") == Path("runs/train")  # an empty folder is free
    (tmp_path / "runs" / "train" / "last.pt").write_bytes(b"x")
    (tmp_path / "runs" / "train2").mkdir()
    (tmp_path / "runs" / "train2" / "results.csv").write_text("epoch\n")
    assert TC.config_from_args(_args()).train.out == str(Path("runs") / "train3")
    assert TC.config_from_args(_args(out="runs/train")).train.out == "runs/train"  # given: it is refused later if it holds a run
    (tmp_path / "data.yaml").write_text("x: 1\n")
    cfg = TC.config_from_args(_args(data="data.yaml"))
    cfg.save_yaml(tmp_path / "saved.yaml")
    assert ExperimentConfig.load_yaml(tmp_path / "saved.yaml").data.data == str(tmp_path / "data.yaml")


@pytest.fixture(scope="module")
def shelves(tmp_path_factory):
    """A tiny `detect synth` dataset (12 shelves of 96 px)."""
    from detect.data.synth import render_dataset

    out = tmp_path_factory.mktemp("synth") / "shelves"
    render_dataset(out, 12, seed=4, size=96, splits=(0.75, 0.25, 0.0))
    return out


def test_real_augmentation_is_seeded_per_sample_and_epoch(shelves):
    from torch.utils.data import DataLoader

    from detect.data.dataset import DetectionDataset
    from detect.data.spec import resolve_data
    from detect.data.transforms import train_transform
    from detect.engine.loader import SeededDataset

    cache = resolve_data(shelves, "train")
    ds = SeededDataset(DetectionDataset(cache.records, train_transform(64, 1.0, 0.3)), seed=5)
    a = ds[(0, 1)]
    ds[(0, 2)]
    b = ds[(0, 1)]
    c = ds[(1, 1)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert not torch.equal(a[0], c[0])  # the same image is augmented differently next epoch
    # in a DataLoader worker process (first sample there) it is drawn exactly the same
    w = next(iter(DataLoader(ds, batch_size=None, sampler=[(0, 1)], num_workers=1)))
    assert torch.equal(w[0], a[0]) and torch.equal(w[1]["boxes"], a[1]["boxes"])


def test_samples_reseed_host_generators_only(shelves, monkeypatch):
    """A sample reseeds Python, NumPy and torch's CPU generator, not every device's: before CUDA
    starts, torch.manual_seed queues a CUDA seeding with a formatted stack trace each time
    (~1.4 ms, a fifth of a 320 px sample's work in a loader worker)."""
    from detect.data.dataset import DetectionDataset
    from detect.data.spec import resolve_data
    from detect.data.transforms import train_transform
    from detect.engine.loader import SeededDataset

    cache = resolve_data(shelves, "train")
    ds = SeededDataset(DetectionDataset(cache.records, train_transform(64, 1.0, 0.3)), seed=5)
    a = ds[(0, 1)]
    torch.manual_seed(123)
    before = torch.rand(3)

    def no_device_seeding(seed):
        raise AssertionError("a sample seeded the device generators")

    monkeypatch.setattr(torch, "manual_seed", no_device_seeding)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_device_seeding)
    b = ds[(0, 1)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    torch.default_generator.manual_seed(123)
    assert torch.equal(torch.rand(3), before)  # the CPU generator is the one torch.manual_seed sets


@pytest.mark.slow
def test_resume_repeats_uninterrupted_run_with_real_ssd_and_data(shelves, tmp_path):
    """The resume test of the tiny model, with `detect synth` data, albumentations and the SSD."""

    def cfg(out, **kw):
        c = ExperimentConfig()
        c.data.data, c.data.workers = str(shelves), 0
        c.model.pretrained, c.model.backbone = "none", "mobilenet_v3_large"
        c.preprocess.imgsz = 64
        c.train.__dict__.update(out=str(out), device="cpu", batch=3, epochs=2, lr=0.02, warmup_epochs=0.5, **kw)
        return c

    evals = []

    def killed_in_epoch_2(model, *a):
        evals.append(1)
        if len(evals) == 2:
            raise KeyboardInterrupt
        return epoch_eval(model, *a)

    T.train(cfg(tmp_path / "a"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg(tmp_path / "b"), progress=False, eval_fn=killed_in_epoch_2)
    T.train(cfg(tmp_path / "b", resume=True), progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert_same_state(a["model"], b["model"], atol=1e-6)
    assert_same_state(a["ema"]["model"], b["ema"]["model"], atol=1e-6)


def test_repeat_factors_balance_classes_and_the_sampler_keeps_epoch_length():
    from detect.engine.loader import repeat_factors

    # class 0 in 8 images, class 1 in 2, image 9 holds both, image 10 has no boxes
    labels = [np.array([0])] * 8 + [np.array([1]), np.array([0, 1]), np.array([], np.int64)]
    r = repeat_factors(labels, power=1.0)
    f0, f1 = 9 / 11, 2 / 11
    assert r[:8] == pytest.approx([1.0] * 8) and r[8] == pytest.approx(f0 / f1) and r[9] == pytest.approx(f0 / f1)
    assert r[10] == 1.0
    assert repeat_factors(labels, power=0.5)[8] == pytest.approx((f0 / f1) ** 0.5)
    s = EpochShardSampler(11, seed=1, repeat=r)
    assert len(s) == round(r.sum())
    counts = np.zeros(11)
    for epoch in range(50):
        s.set_epoch(epoch)
        got = [i for _, i in s]
        assert len(got) == len(s)
        counts += np.bincount(got, minlength=11)
    assert counts[8] / 50 == pytest.approx(r[8], rel=0.15) and counts[0] / 50 == pytest.approx(1.0, rel=0.15)
    with pytest.raises(ValueError, match=">= 1"):
        EpochShardSampler(2, repeat=np.array([1.0, 0.5]))


def _cache_of_images(root, n=8):
    """A cache of ``n`` real 64x48 images with one box each (what `detect xml2pkl` writes)."""
    from PIL import Image

    from detect.data.cache.xml2pkl import build_cache

    (root / "ann").mkdir(parents=True)
    (root / "img").mkdir()
    for i in range(n):
        Image.new("RGB", (64, 48), (30 * i % 255, 90, 160)).save(root / "img" / f"{i}.jpg")
        (root / "ann" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><object><name>c{i % 2}</name><bndbox><xmin>2</xmin><ymin>3</ymin>"
            "<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")
    build_cache(root / "ann", root / "c.pkl", images=root / "img", progress=False)
    return root / "c.pkl"


@pytest.mark.parametrize("batch", [2, 1])
def test_images_gone_after_caching_are_skipped_counted_and_named(tmp_path, capsys, batch):
    """An image deleted or corrupted after the cache was built aborted training with ImageReadError."""
    cache = _cache_of_images(tmp_path / "d")
    (tmp_path / "d/img/3.jpg").unlink()
    (tmp_path / "d/img/5.jpg").write_bytes(b"\xff\xd8 not a jpeg any more")
    cfg = tiny_config(tmp_path / "run", epochs=2, batch=batch)
    cfg.data.data, cfg.data.augment = str(cache), 0.0
    res = T.train(cfg, progress=False, model_fn=tiny_model, eval_fn=tiny_eval)  # the real data path
    assert res["epochs"] == 2 and res["unreadable"] == 4  # two images, each epoch
    rows = load_checkpoint(tmp_path / "run" / "last.pt")["metrics"]
    assert [r["unreadable"] for r in rows] == [2, 2]
    if batch == 1:  # a batch with no image left is a skipped step, not a crash
        assert [r["skipped"] for r in rows] == [2, 2]
    out = capsys.readouterr()
    assert "unreadable 2" in out.out  # the epoch line
    assert "3.jpg: file not found" in out.err and "5.jpg: not a decodable image" in out.err


def test_cmd_train_exits_1_when_images_were_skipped(tmp_path, monkeypatch):
    from detect.cli import build_parser

    cache = _cache_of_images(tmp_path / "d", n=4)
    (tmp_path / "d/img/1.jpg").unlink()
    monkeypatch.setattr(T, "_default_model", tiny_model)
    args = build_parser().parse_args(["train", "--data", str(cache), "--out", str(tmp_path / "run"), "--epochs", "1",
                                      "--batch", "2", "--imgsz", "32", "--device", "cpu", "--workers", "0",
                                      "--augment", "0", "--no-progress"])
    assert TC.cmd_train(args) == 1


def test_a_real_run_leaves_its_pictures_and_detect_vals_report(shelves, tmp_path, capsys):
    """A 1-epoch SSD (random backbone, 64 px) on synthetic shelves through `detect train`: the run
    folder holds the curves, the first training batch, and best.pt's evaluation as `detect val`
    writes it (val.json with the error breakdown, PR curves, both confusion matrices, per-class
    AP, the val mosaic); every picture decodes, and the progress bar showed a loss."""
    import cv2

    from detect.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--data", str(shelves), "--imgsz", "64", "--epochs", "1", "--batch", "4", "--workers", "0",
               "--pretrained", "none", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "loss=" in err and "epoch 1/1" in err  # the loss shows from the first step
    data = json.loads((out / "val.json").read_text())
    assert set(data["errors"]["dap"]) == {"cls", "loc", "both", "dupe", "bkg", "missed"} and data["epoch"] == 1
    assert data["sliced"] is None  # 96-px photos at 64 px are read whole: the batched loader
    for name in ("results.png", "train_batch.png", "pr_curve.png", "confusion_matrix.png",
                 "confusion_matrix_normalized.png", "per_class_ap.png", "errors.png", "val_mosaic.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and min(img.shape[:2]) >= 128, name
    assert cv2.imread(str(out / "train_batch.png")).shape[:2] == (128, 4 * 128)  # 4 images of 64 px, tiles of 128
    try:
        import tensorboard  # noqa: F401  (the `tensorboard` extra, in dev)
    except ImportError:
        return
    assert list((out / "tb").glob("events.out.tfevents.*")), "TensorBoard events"


def test_imgsz_0_is_chosen_from_the_training_images():
    from types import SimpleNamespace as R

    from detect.engine.datasets import auto_imgsz

    assert auto_imgsz([R(width=224, height=224)] * 5) == 224  # groceries: the photos' own size
    assert auto_imgsz([R(width=300, height=200), R(width=310, height=240), R(width=1000, height=800)]) == 320
    assert auto_imgsz([R(width=100, height=80)] * 3) == 224  # not below what ImageNet backbones saw
    assert auto_imgsz([R(width=4032, height=3024)] * 3) == 640  # nor above what a CPU can afford
    assert auto_imgsz([R(width=0, height=0)]) == 320  # sizes unknown
    assert ExperimentConfig().preprocess.imgsz == 0
