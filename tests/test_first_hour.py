"""Issue 24, a new user's first hour: `detect train` warns (exit 0) about dropped annotations
unless --strict; ultralytics' key=value spelling gets a hint; a second `detect predict` gets its
own runs/predict2; the annotated MP4 is H.264 where an encoder is available;
RETAIL_DETECT_CACHE moves the INT8 calibration cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detect.cli import build_parser, main


@pytest.mark.parametrize("strict", [False, True])
def test_train_exits_0_with_a_warning_when_problems_were_dropped(strict, tmp_path, monkeypatch, capsys):
    import detect.engine.train_cli as TC

    result = {"nonfinite_loss": 0, "unreadable": 0, "data_problems": 1}  # train() counts them
    monkeypatch.setattr(TC, "train", lambda cfg, **kw: result)
    monkeypatch.setattr(TC, "load_data", lambda cfg: __import__("types").SimpleNamespace(train_records=[]))  # read once there
    args = build_parser().parse_args(["train", "--data", str(tmp_path / "d.pkl"), "--out", str(tmp_path / "run"),
                                      *(["--strict"] if strict else [])])
    assert TC.cmd_train(args) == (1 if strict else 0)
    err = capsys.readouterr().err
    assert "warning: 1 problem(s) in the data" in err and "--strict" in err


def test_ultralytics_key_value_arguments_get_a_hint(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "data=ds", "epochs=1", "imgsz=160", "lr0=0.01"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err
    assert "hint: options are spelled --key value" in err and "--data ds --epochs 1 --imgsz 160" in err
    assert "no option for lr0" in err


def test_second_predict_is_numbered_and_never_mixes_into_the_first(tmp_path, monkeypatch, capsys):
    from _predict_helpers import confident_ssd_checkpoint
    from dataset_fixtures import image

    w = confident_ssd_checkpoint(tmp_path / "w.pt")
    img = image(tmp_path / "shots" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["predict", str(img), "--weights", str(w), "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["predict", "predict2"]
    assert "results saved to runs/predict2" in capsys.readouterr().out
    (tmp_path / "f").write_text("mine")
    assert main(["predict", str(img), "--weights", str(w), "--save-dir", str(tmp_path / "f")]) == 2
    assert "--save-dir" in capsys.readouterr().err and (tmp_path / "f").read_text() == "mine"


def test_int8_cache_follows_retail_detect_cache(tmp_path, monkeypatch):
    from detect.infer.quantize import cache_dir as int8_cache_dir

    monkeypatch.setenv("RETAIL_DETECT_CACHE", str(tmp_path / "c"))
    assert int8_cache_dir() == tmp_path / "c" / "int8"
    monkeypatch.delenv("RETAIL_DETECT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert int8_cache_dir() == tmp_path / "x" / "retail-detect" / "int8"


def test_annotated_video_is_h264_where_pyav_has_libx264(tmp_path, capsys):
    import cv2
    import numpy as np

    from detect.viz.video import H264, MP4V, VideoSink, h264_available, video_info

    frames = [np.full((47, 63, 3), k * 20, np.uint8) for k in range(6)]  # odd sides: padded to even for yuv420p
    with VideoSink(tmp_path / "a.mp4", 12.0) as sink:
        for f in frames:
            sink.write(f)
    info = video_info(tmp_path / "a.mp4")
    assert info["frames"] == 6 and info["fps"] == 12.0
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1")
    cap.release()
    if h264_available():
        assert sink.codec == H264 and fourcc in ("avc1", "h264") and (info["width"], info["height"]) == (64, 48)
    else:
        assert sink.codec == MP4V and "no H.264 encoder" in capsys.readouterr().err
    with VideoSink(tmp_path / "b.mp4", 12.0, fourcc="mp4v") as sink:  # the fallback, asked for
        sink.write(frames[0])
    assert sink.codec == MP4V and video_info(tmp_path / "b.mp4")["frames"] == 1
