"""Checkpoints: safe loading only, clear errors for foreign/other-version/pickled/truncated files,
RNG states through weights_only, atomic writes, and load_model with the real SSD."""

from __future__ import annotations

import random
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from detect.config import ExperimentConfig
from detect.engine import checkpoint as C


class Evil:
    """Any pickled object: weights_only=True must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_roundtrip_and_rng_states(tmp_path):
    random.seed(1)
    np.random.seed(2)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    torch.manual_seed(3)
    state = C.rng_state()
    path = C.save_checkpoint(tmp_path / "x.pt", config=ExperimentConfig().to_dict(), classes=["a", "b"],
                             model=OrderedDict(w=torch.ones(2)), rng=[state], best_map=float("nan"), metrics=[{"epoch": 1, "voc_ap50": None}])
    expect = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ck = C.load_checkpoint(path)  # weights_only=True
    assert ck["format"] == C.FORMAT and ck["classes"] == ["a", "b"] and ck["metrics"][0]["voc_ap50"] is None
    C.set_rng_state(ck["rng"][0])
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    assert got[:3] == expect[:3] and torch.equal(got[3], expect[3])


def test_refuses_foreign_other_version_pickled_truncated_missing(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(C.CheckpointError, match="not a retail-detect checkpoint.*state_dict"):
        C.load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "retail-detect/2", "config": {}, "classes": [], "model": {}}, tmp_path / "v2.pt")
    with pytest.raises(C.CheckpointError, match="'retail-detect/2'.*reads 'retail-detect/1'"):
        C.load_checkpoint(tmp_path / "v2.pt")
    torch.save({"format": "yolo/8"}, tmp_path / "yolo.pt")
    with pytest.raises(C.CheckpointError, match="foreign checkpoint format 'yolo/8'"):
        C.load_checkpoint(tmp_path / "yolo.pt")
    torch.save({"format": C.FORMAT, "config": {}, "classes": [], "model": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(C.CheckpointError, match="weights_only=True"):
        C.load_checkpoint(tmp_path / "evil.pt")
    good = C.save_checkpoint(tmp_path / "good.pt", config={}, classes=[], model={"w": torch.ones(1000)})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(C.CheckpointError, match="truncated"):
        C.load_checkpoint(tmp_path / "cut.pt")
    passwd = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    junk_files = [("passwd.pt", passwd, "a text file"), ("text.pt", b"not a checkpoint\n" * 20, "a text file"),
                  ("x.txt", "größe: 3 µm\n".encode() * 400, "a text file"), ("zeros.pt", bytes(4096), "a file of unknown format"),
                  ("empty.pt", b"", "an empty file"), ("photo.pt", b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG image"),
                  ("random.pt", bytes(range(256)) * 4, "a file of unknown format")]
    for name, junk, kind in junk_files:
        (tmp_path / name).write_bytes(junk)  # garbage must give one sentence naming what it is, never a pickle error
        with pytest.raises(C.CheckpointError, match=f"^{re.escape(str(tmp_path / name))} is {kind}, not a checkpoint; pass"):
            C.load_checkpoint(tmp_path / name)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), tmp_path / "script.pt")
    with pytest.raises(C.CheckpointError, match="script.pt is a TorchScript file"):
        C.load_checkpoint(tmp_path / "script.pt")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(2))
    with pytest.raises(C.CheckpointError, match="arrays.npz is a NumPy .npz archive, not a checkpoint"):
        C.load_checkpoint(tmp_path / "arrays.npz")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        C.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": C.FORMAT, "classes": []}, tmp_path / "part.pt")
    with pytest.raises(C.CheckpointError, match="without \\['config', 'model'\\]"):
        C.load_checkpoint(tmp_path / "part.pt")


def test_failed_write_keeps_previous_file(tmp_path):
    path = C.save_checkpoint(tmp_path / "last.pt", config={}, classes=["a"], model={"w": torch.zeros(1)})
    with pytest.raises(Exception):
        C.save_checkpoint(path, config={}, classes=["b"], model={"w": lambda: 0})  # cannot be saved
    assert C.load_checkpoint(path)["classes"] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def _tiny_ssd_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.pretrained = "imagenet"  # as trained; load_model must not need the weights
    cfg.model.backbone = "mobilenet_v3_large"  # torchvision backbone: its weight file is absent here
    cfg.model.backbone_weights = "/nonexistent/mobilenet_v3_large.pth"
    cfg.model.num_classes = 2
    cfg.preprocess.imgsz = 64
    return cfg


def test_load_model_rebuilds_ssd_without_backbone_weights_and_prefers_ema(tmp_path):
    from detect.models.build import build_model

    cfg = _tiny_ssd_cfg()
    build = ExperimentConfig.from_dict(cfg.to_dict())
    build.model.pretrained, build.model.backbone_weights = "none", None
    torch.manual_seed(0)
    model = build_model(build.model, build.preprocess)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state = dict(config=cfg.to_dict(), classes=["cola", "chips"], model=model.state_dict(),
                 ema={"model": ema, "updates": 5}, epoch=3, best_map=0.5, best_epoch=3, metrics=[],
                 optimizer={}, scheduler={})
    C.save_checkpoint(tmp_path / "last.pt", **state)
    C.save_checkpoint(tmp_path / "best.pt", **C.inference_state(state))
    C.export_weights(tmp_path / "last.pt", tmp_path / "half.pt", half=True)
    for name in ("last.pt", "half.pt"):  # (half.pt is best.pt's inference_state, in fp16)
        loaded, lcfg, classes = C.load_model(tmp_path / name, "cpu")
        assert classes == ["cola", "chips"] and not loaded.training
        assert lcfg.model.pretrained == "imagenet"  # the stored config comes back unchanged
        key = next(k for k, v in ema.items() if v.is_floating_point())
        torch.testing.assert_close(loaded.state_dict()[key], ema[key], atol=1e-2 if name == "half.pt" else 0, rtol=1e-3)
        assert next(loaded.parameters()).dtype == torch.float32
        out = loaded(torch.rand(1, 3, 64, 64))
        assert set(out[0]) >= {"boxes", "scores", "labels"}
    sizes = {n: (tmp_path / n).stat().st_size for n in ("last.pt", "best.pt", "half.pt")}
    assert sizes["half.pt"] < 0.6 * sizes["best.pt"] < sizes["last.pt"]


def test_load_model_reports_weights_that_do_not_fit(tmp_path, monkeypatch):
    import detect.models.build
    from tiny_detector import TinyDetector

    monkeypatch.setattr(detect.models.build, "build_model", lambda m, p: TinyDetector(m.num_classes, p.imgsz))
    cfg = ExperimentConfig()
    cfg.preprocess.imgsz = 32  # a trained checkpoint always has its input size (0 is refused: issue 24)
    C.save_checkpoint(tmp_path / "bad.pt", config=cfg.to_dict(), classes=["only_one"], ema=None,
                      model=TinyDetector(3, 32).state_dict())
    with pytest.raises(C.CheckpointError, match="(?s)bad.pt: weights do not fit.*cls.weight"):
        C.load_model(tmp_path / "bad.pt")


def test_checkpoint_from_before_conv_head_rebuilds_without_it(tmp_path):
    """``model.conv_head`` arrived after retail-detect/1 checkpoints existed (the shipped weights
    among them): a stored config without the key must rebuild the 320-channel network it was
    trained as, while a fresh config gets today's default (the 1280-channel head)."""
    from detect.models.build import build_model

    def lite_cfg() -> ExperimentConfig:
        cfg = _tiny_ssd_cfg()
        cfg.model.backbone, cfg.model.backbone_weights = "efficientnet_lite0", None
        return cfg

    old = lite_cfg()
    old.model.conv_head = False
    build = ExperimentConfig.from_dict(old.to_dict())
    build.model.pretrained = "none"
    model = build_model(build.model, build.preprocess)
    stored = old.to_dict()
    del stored["model"]["conv_head"]  # as written before the field existed
    C.save_checkpoint(tmp_path / "old.pt", config=stored, classes=["cola", "chips"], ema=None, model=model.state_dict())
    loaded, cfg, _ = C.load_model(tmp_path / "old.pt")
    assert cfg.model.conv_head is False
    assert loaded.backbone.channels[-1] == 320
    assert ExperimentConfig().model.conv_head is True
    fresh = lite_cfg()
    fresh.model.pretrained = "none"
    assert build_model(fresh.model, fresh.preprocess).backbone.channels[-1] == 1280


def test_fast_rcnn_checkpoint_with_the_old_extra_dict_loads(tmp_path):
    """Fast R-CNN settings used to live in an untyped ``model.extra`` dict (and ``proposals``,
    ``roi_op``, ``roi_size`` on the model config, the proposal file among them): such a
    checkpoint rebuilds the same network, and its proposal file lands on the data config."""
    from detect.config import FastRCNNConfig
    from detect.models.build import build_model

    cfg = _tiny_ssd_cfg()
    cfg.model.name, cfg.model.fast_rcnn = "fast_rcnn", FastRCNNConfig(
        proposals="selective_search", roi_op="roi_align", roi_size=5, feature_stride=32, head="conv", fc_dim=64,
        roi_channels=32, rois_per_image=16, bg_iou=(0.0, 0.5), ss_mode="quality", rpn_anchor_fractions=[0.1, 0.3],
        semantic=False)  # the extra dict predates semantic features and the context
    cfg.model.context = "none"
    build = cfg.for_rebuild()
    model = build_model(build.model, build.preprocess)
    old = cfg.to_dict()  # written the old way:
    fr = old["model"].pop("fast_rcnn")
    old["model"].update(proposals=fr.pop("proposals"), roi_op=fr.pop("roi_op"), roi_size=fr.pop("roi_size"))
    old["model"]["extra"] = {**{k: fr[k] for k in ("feature_stride", "head", "fc_dim", "roi_channels", "rois_per_image",
                                                     "bg_iou", "ss_mode", "rpn_anchor_fractions")},
                             "proposal_file": "all.ss.pkl", "max_proposals": 500}
    del old["data"]["proposal_file"], old["data"]["max_proposals"]
    C.save_checkpoint(tmp_path / "old.pt", config=old, classes=["cola", "chips"], ema=None, model=model.state_dict(),
                      preprocess=dict(old["preprocess"]))  # the top-level copy older files carry
    loaded, got, _ = C.load_model(tmp_path / "old.pt")
    assert got.model.fast_rcnn == cfg.model.fast_rcnn and (got.data.proposal_file, got.data.max_proposals) == ("all.ss.pkl", 500)
    assert type(loaded).__name__ == "FastRCNN" and loaded.feature_stride == 32 and loaded.rpn is None
    with torch.no_grad():
        assert len(loaded(torch.rand(1, 3, 64, 64), proposals=[torch.tensor([[0.0, 0.0, 32.0, 32.0]])])) == 1
    assert "preprocess" not in C.load_checkpoint(tmp_path / "old.pt")  # stored once: in the config


@pytest.mark.parametrize("ema", [False, True])
def test_fast_rcnn_auto_context_from_when_auto_meant_prior_rebuilds_the_prior(tmp_path, ema):
    """Fast R-CNN's ``context: auto`` was the class prior until the 60-minute groceries runs
    chose ``add``: a checkpoint saved with ``auto`` and a prior's weights rebuilds the prior; a
    new one (no ``context.scale``) rebuilds ``add``."""
    from detect.models.build import build_model

    cfg = _tiny_ssd_cfg()
    cfg.model.name, cfg.model.context = "fast_rcnn", "prior"
    cfg.model.fast_rcnn.fc_dim, cfg.model.fast_rcnn.roi_channels = 32, 16
    build = cfg.for_rebuild()
    prior = build_model(build.model, build.preprocess)
    assert "context.scale" in prior.state_dict()
    stored = cfg.to_dict()
    stored["model"]["context"] = "auto"  # as training with the defaults wrote it
    state = prior.state_dict()
    C.save_checkpoint(tmp_path / "old.pt", config=stored, classes=["cola", "chips"], model=state,
                      ema={"model": dict(state), "updates": 1} if ema else None)
    loaded, got, _ = C.load_model(tmp_path / "old.pt")
    assert got.model.context == "prior" and loaded.context.mode == "prior"
    cfg.model.context = "auto"
    build = cfg.for_rebuild()
    new = build_model(build.model, build.preprocess)
    assert new.context.mode == "add" and new.context_loss == 0.0  # today's auto for Fast R-CNN
    C.save_checkpoint(tmp_path / "new.pt", config=cfg.to_dict(), classes=["cola", "chips"], model=new.state_dict(), ema=None)
    loaded, got, _ = C.load_model(tmp_path / "new.pt")
    assert got.model.context == "auto" and loaded.context.mode == "add"


def test_ssd_checkpoint_with_mean_std_buffers_loads(tmp_path):
    """Older SSD checkpoints (the shipped weights among them) hold the preprocessing as
    ``mean``/``std`` buffers in the state dict too; they load, and the config's values are used."""
    from detect.models.build import build_model

    cfg = _tiny_ssd_cfg()
    build = cfg.for_rebuild()
    model = build_model(build.model, build.preprocess)
    state = {**model.state_dict(), "mean": torch.zeros(1, 3, 1, 1), "std": torch.ones(1, 3, 1, 1)}
    C.save_checkpoint(tmp_path / "old.pt", config=cfg.to_dict(), classes=["cola", "chips"], model=state,
                      ema={"model": dict(state), "updates": 1})
    loaded, _, _ = C.load_model(tmp_path / "old.pt")
    assert torch.allclose(loaded.mean.flatten(), torch.tensor(cfg.preprocess.mean))


def test_for_rebuild_drops_weight_files_and_process_groups_on_a_copy():
    """What load_model and `detect val --max-det` build from: a checkpoint trained with
    --backbone-weights and --bn sync must rebuild with neither (the file may be gone; there
    is no process group), and the stored config itself stays as trained."""
    cfg = _tiny_ssd_cfg()
    cfg.model.bn = "sync"
    build = cfg.for_rebuild()
    assert (build.model.pretrained, build.model.backbone_weights, build.model.bn) == ("none", None, "train")
    assert (cfg.model.pretrained, cfg.model.backbone_weights, cfg.model.bn) == (
        "imagenet", "/nonexistent/mobilenet_v3_large.pth", "sync")
    assert build.model.backbone == cfg.model.backbone and build.preprocess == cfg.preprocess


@pytest.mark.parametrize("config", ["oops", [1, 2], None, {"model": 5}, {"nope": {}}])
def test_config_that_is_not_a_config_dict_is_a_checkpoint_error(tmp_path, config):
    """A str config raised AttributeError in stored_config (a traceback from `detect val`)."""
    torch.save({"format": C.FORMAT, "config": config, "classes": ["a"], "model": {}}, tmp_path / "bad.pt")
    with pytest.raises(C.CheckpointError, match="bad.pt: .*config"):
        C.load_model(tmp_path / "bad.pt")
