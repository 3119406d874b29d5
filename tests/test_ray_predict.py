"""``detect predict --ray``: the same detections.jsonl / detections.csv / counts.csv as
``detect predict``. Fast: the actor (:class:`PredictBatch`) called directly on blocks, its rows
written by the driver's code, against ``detect predict``'s files; usage errors. Slow (RUN_SLOW=1,
about a minute on 2 cores): a real two-node Ray cluster on 127.0.0.1, both nodes used."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.cli import main
from detect.infer.ray_predict import PredictBatch, block_size, rows_of
from detect.infer.results import ResultWriter
from _predict_helpers import CLASSES, confident_ssd_checkpoint, synthetic_image, write_video

TABLES = ("detections.jsonl", "detections.csv", "counts.csv")
OPTIONS = ["--conf", "0.05", "--threads", "1", "--no-progress", "--save-json", "--save-csv"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return confident_ssd_checkpoint(tmp_path_factory.mktemp("ray") / "tiny.pt")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Nine photos of different sizes in two folders, and one broken file."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(9):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"p{i}.jpg"), synthetic_image(64 + 16 * i, 48 + 8 * i, seed=i))
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def reference(weights, photos, tmp_path_factory) -> Path:
    """``detect predict``'s tables for the photos."""
    out = tmp_path_factory.mktemp("plain")
    assert main(["predict", str(photos), "--weights", str(weights), "--save-dir", str(out), "--no-save", *OPTIONS]) == 1
    return out


def test_actor_rows_written_by_the_driver_are_predicts_files(weights, photos, reference, tmp_path):
    from detect.infer.sources import expand

    files, _ = expand(str(photos))
    actor = PredictBatch((weights.name, weights.read_bytes()), None,
                         {"device": "cpu", "conf": 0.05, "threads": 1, "slice": "auto"}, batch=3)
    writer = ResultWriter(tmp_path, CLASSES, True, True)
    for start in range(0, len(files), 4):  # blocks of 4, as map_batches would hand them in
        block = {"index": np.arange(start, min(start + 4, len(files))), "path": np.asarray(files[start:start + 4], object)}
        for frame, det, size, node in rows_of(actor(block), CLASSES):
            writer.write(frame, det, size=size)
            assert node == "local"
    writer.close()
    for name in TABLES:
        assert (tmp_path / name).read_text() == (reference / name).read_text(), name
    lines = [json.loads(x) for x in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and sum("error" in x for x in lines) == 1 and sum(len(x.get("detections", [])) for x in lines) > 0


def test_block_size_spreads_few_photos():
    assert [block_size(n, 2) for n in (1, 10, 31, 32, 1000)] == [1, 5, 16, 16, 16]
    assert block_size(10, 0) == 10


def test_usage_errors(weights, photos, tmp_path, capsys):
    video = tmp_path / "v"
    video.mkdir()
    write_video(video / "clip.mp4", 3)
    assert main(["predict", str(video), "--ray", "local", "--weights", str(weights), "--save-dir", str(tmp_path / "o")]) == 2
    assert "run detect predict on videos without --ray" in capsys.readouterr().err
    assert main(["predict", "rtsp://127.0.0.1:9/x", "--ray", "local", "--weights", str(weights)]) == 2
    assert "not a stream" in capsys.readouterr().err
    assert main(["predict", str(photos), "--ray", "local", "--show", "--weights", str(weights)]) == 2
    assert "--show" in capsys.readouterr().err


@pytest.mark.slow
def test_two_node_cluster_writes_predicts_files(weights, photos, reference, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no report to the internet
    # every node, and the driver, on 127.0.0.1: Ray turns 127.0.0.1 into the machine's address
    # unless told this is a one-machine cluster (read at call time, and by the nodes' processes)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr("ray._private.ray_constants.ENABLE_RAY_CLUSTER", False)
    local = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    cluster = Cluster(initialize_head=True, head_node_args={**local, "include_dashboard": False})
    try:
        cluster.add_node(**local)
        cluster.wait_for_nodes()
        ray.data.DataContext.get_current().wait_for_min_actors_s = 300  # both actors up before the first block
        out = tmp_path / "ray"
        rc = main(["predict", str(photos), "--ray", cluster.address, "--weights", str(weights), "--save-dir", str(out),
                   *OPTIONS])
        assert rc == 1  # the broken file, reported, the rest written
        for name in TABLES:
            assert (out / name).read_text() == (reference / name).read_text(), name
        summary = json.loads((out / "summary.json").read_text())
        assert summary["images"] == 9 and summary["failed"] == 1
        assert summary["ray"]["actors"] == 2 and len(summary["ray"]["images_per_node"]) == 2  # both nodes worked
        assert not ray.is_initialized()
    finally:
        cluster.shutdown()
