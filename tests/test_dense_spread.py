"""bench/dense_spread.py: the run-to-run summary of bench/dense.py part b (pure arithmetic)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spread():
    spec = importlib.util.spec_from_file_location("dense_spread", ROOT / "bench" / "dense_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _part_b(single, m3, m6):
    return {"single photos": {"voc_ap50": single}, "3x3 mosaics": {"voc_ap50": m3}, "6x8 sheets": {"voc_ap50": m6}}


def test_a_runs_gaps_are_the_mosaic_minus_the_single_photos(spread):
    cols = spread.run_columns(_part_b(0.80, 0.77, 0.75))
    assert cols["3x3 gap"] == pytest.approx(-0.03) and cols["6x8 gap"] == pytest.approx(-0.05)
    assert "6x8 gap" not in spread.run_columns({"single photos": {"voc_ap50": 0.8}, "3x3 mosaics": {"voc_ap50": 0.7}})


def test_groups_mean_spread_and_welch_difference(spread):
    a = [spread.run_columns(_part_b(0.80, 0.76, 0.75)), spread.run_columns(_part_b(0.80, 0.78, 0.75))]
    b = [spread.run_columns(_part_b(0.81, 0.79, 0.76)), spread.run_columns(_part_b(0.81, 0.79, 0.78)),
         spread.run_columns(_part_b(0.81, 0.79, 0.77))]
    out = spread.compare({"a": a, "b": b})
    assert out["groups"]["a"]["3x3"]["mean"] == pytest.approx(0.77)
    assert out["groups"]["a"]["3x3"]["sd"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))  # sample sd of 0.76, 0.78
    d = out["vs_first"]["b"]["6x8"]
    assert d["diff"] == pytest.approx(0.02)
    assert d["se"] == pytest.approx(math.sqrt(0.0 / 2 + 0.01 ** 2 / 3))  # a's 6x8 has no spread, b's sd is 0.01
    assert d["t"] == pytest.approx(0.02 / d["se"])
    one = spread.compare({"a": a, "c": a[:1]})["vs_first"]["c"]["single"]
    assert one["se"] is None and one["t"] is None  # one run: no spread to compare against


def test_the_cli_writes_json_and_names_a_bad_file(spread, tmp_path, capsys):
    files = []
    for i, v in enumerate((0.75, 0.76)):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps({"b_groceries": _part_b(0.8, v, v)}))
        files.append(str(f))
    out = tmp_path / "spread.json"
    assert spread.main(["--group", "x=" + ",".join(files), "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["groups"]["x"]["3x3"]["mean"] == pytest.approx(0.755)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert spread.main(["--group", f"x={bad}", "--json", str(out)]) == 2
    assert "bad.json" in capsys.readouterr().err
