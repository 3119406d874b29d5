"""DistributedDataParallel through torchrun: 2 gloo processes on CPU, each with half of the
global batch, train the same weights as 1 process with the whole batch.

Tolerance: parameters and EMA weights after 8 steps agree to 1e-5 (max abs), per-epoch losses
to 1e-5. The only differences are float summation orders (gradient all-reduce). The tiny model
uses frozen BN (PyTorch has no CPU SyncBN) and a per-image mean loss, so the 2-process average of
local gradients equals the 1-process gradient. Run as a script, this file is the torchrun worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
TOL = 1e-5


def _cfg(out: Path):
    from tiny_detector import tiny_config

    cfg = tiny_config(out, epochs=2, batch=4, seed=11, clip_grad=1.0)
    cfg.train.lr = 0.1
    return cfg


def _train(out: Path) -> dict:
    from tiny_detector import tiny_data, tiny_eval, tiny_model

    from detect.engine.train import train

    return train(_cfg(out), progress=False, data_fn=tiny_data(n=16), model_fn=tiny_model, eval_fn=tiny_eval)


def _torchrun(args: list[str], tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", *args]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_two_gloo_processes_match_one_process(tmp_path):
    from detect.engine.checkpoint import load_checkpoint

    proc = _torchrun([str(Path(__file__).resolve()), str(tmp_path / "ddp")], tmp_path)
    assert "x 2 processes" in proc.stdout  # rank 0 logged the DDP setup, once
    assert proc.stdout.count("epoch 1/2") == 1
    one = _train(tmp_path / "one")
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert a["config"]["train"]["batch"] == b["config"]["train"]["batch"] == 4
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8  # same steps of the global batch
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=TOL, rtol=0, msg=lambda m: f"{k}: {m}")
        torch.testing.assert_close(b["ema"]["model"][k], a["ema"]["model"][k], atol=TOL, rtol=0)
    init = _init_state()
    moved = max((a["model"][k] - init[k]).abs().max().item() for k in init if init[k].is_floating_point())
    assert moved > 100 * TOL  # training changed the weights far beyond the tolerance
    for ra, rb in zip(a["metrics"], b["metrics"]):
        assert abs(ra["train_loss"] - rb["train_loss"]) < TOL and ra["voc_ap50"] == rb["voc_ap50"]
    assert len(b["rng"]) == 2  # one RNG state per rank, for an exact resume
    assert one["epochs"] == 2


def _init_state() -> dict:
    """The weights both runs start from (the model built after seeding with the run's seed)."""
    from tiny_detector import TinyDetector

    torch.manual_seed(11)
    return TinyDetector(3, 32).state_dict()


@pytest.mark.slow
def test_torchrun_cli_trains_real_ssd_on_synthetic_shelves(tmp_path):
    """The real path: `torchrun -m detect.cli train` on `detect synth` data (about a minute)."""
    from detect.cli import main
    from detect.engine.checkpoint import load_model

    assert main(["synth", str(tmp_path / "shelves"), "--images", "16", "--size", "96", "--seed", "3"]) == 0
    proc = _torchrun(["-m", "detect.cli", "train", "--data", str(tmp_path / "shelves"), "--epochs", "1",
                      "--batch", "4", "--imgsz", "64", "--pretrained", "none", "--device", "cpu", "--workers", "0",
                      "--out", str(tmp_path / "run"), "--no-progress"], tmp_path, timeout=600)
    assert "x 2 processes" in proc.stdout
    model, cfg, classes = load_model(tmp_path / "run" / "last.pt")
    assert cfg.model.num_classes == len(classes) > 0 and not model.training


if __name__ == "__main__":  # the torchrun worker
    _train(Path(sys.argv[1]))
