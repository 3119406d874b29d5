"""Run-to-run spread of bench/dense.py part b: several trainings of each setting, mean and spread.

One training of a setting is one sample: two seeds of the same command differ by 0.01-0.02 on the
groceries mosaics (bench/RESULTS.md, issue 20, fifteenth pass), as much as most changes measured.
This reads the JSON files ``bench/dense.py --parts b --json F`` wrote, grouped by setting, and
prints each run's single-photo / 3x3 / 6x8 ``voc_ap50`` and gaps (mosaic minus single), each
group's mean and standard deviation, and each later group's difference from the first with its
standard error (Welch: the groups' variances added) and t = difference / standard error.

    python bench/dense_spread.py --group base=r1.json,r2.json,r3.json --group head=r4.json,r5.json \
        --json bench/out/dense_spread.json

Nothing here runs a model: it reads what bench/dense.py measured.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"single photos": "single", "3x3 mosaics": "3x3", "6x8 sheets": "6x8"}  # bench/dense.py part b's rows
COLUMNS = ("single", "3x3", "6x8", "3x3 gap", "6x8 gap")


def run_columns(part_b: dict) -> dict[str, float]:
    """One run's part b (``{row name: {"voc_ap50": ...}}``) -> its :data:`COLUMNS` (the rows it
    has; a gap needs its mosaic row and the single photos)."""
    out = {short: float(part_b[row]["voc_ap50"]) for row, short in ROWS.items() if row in part_b}
    for g in ("3x3", "6x8"):
        if g in out and "single" in out:
            out[f"{g} gap"] = out[g] - out["single"]
    return out


def summary(values: list[float]) -> dict[str, float]:
    """mean, sd (sample; 0 for one run) and n of one column over a group's runs."""
    n = len(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if n > 1 else 0.0, "n": n}


def difference(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Group b's mean minus group a's, its standard error (Welch) and t; se and t are None when
    either group has a single run (no spread to compare against)."""
    d = b["mean"] - a["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return {"diff": d, "se": None, "t": None}
    se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
    return {"diff": d, "se": se, "t": d / se if se > 0 else None}


def compare(groups: dict[str, list[dict[str, float]]]) -> dict:
    """``{group: [run columns]}`` -> ``{"groups": {group: {column: summary}}, "vs_first": {group:
    {column: difference}}}`` over the columns every run of every group has."""
    cols = [c for c in COLUMNS if all(c in r for runs in groups.values() for r in runs)]
    stats = {g: {c: summary([r[c] for r in runs]) for c in cols} for g, runs in groups.items()}
    first = next(iter(stats))
    return {"columns": cols, "groups": stats,
            "vs_first": {g: {c: difference(stats[first][c], s[c]) for c in cols} for g, s in stats.items() if g != first}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, metavar="NAME=F1,F2,...",
                    help="a setting and the bench/dense.py JSON files of its runs (repeat; the first is the baseline)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "dense_spread.json"))
    args = ap.parse_args(argv)

    groups: dict[str, list[dict[str, float]]] = {}
    files: dict[str, list[str]] = {}
    for spec in args.group:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            ap.error(f"--group {spec!r}: expected NAME=FILE[,FILE...]")
        groups[name], files[name] = [], []
        for p in paths.split(","):
            try:
                part_b = json.loads(Path(p).read_text())["b_groceries"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"error: {p}: not a bench/dense.py JSON with part b ({type(e).__name__}: {e})", file=sys.stderr)
                return 2
            groups[name].append(run_columns(part_b))
            files[name].append(p)
    result = compare(groups)
    cols = result["columns"]
    print(f"{'run':<28}" + "".join(f"{c:>10}" for c in cols))
    for g, runs in groups.items():
        for p, r in zip(files[g], runs):
            print(f"{g + ' ' + Path(p).stem:<28.28}" + "".join(f"{r[c]:>10.3f}" for c in cols))
        s = result["groups"][g]
        print(f"{g + ' mean (n=' + str(len(runs)) + ')':<28}" + "".join(f"{s[c]['mean']:>10.3f}" for c in cols))
        print(f"{g + ' sd':<28}" + "".join(f"{s[c]['sd']:>10.3f}" for c in cols))
    first = next(iter(groups))
    for g, d in result["vs_first"].items():
        print(f"{g + ' - ' + first:<28}" + "".join(f"{d[c]['diff']:>+10.3f}" for c in cols))
        print(f"{'  standard error':<28}" + "".join(f"{d[c]['se']:>10.3f}" if d[c]["se"] is not None else f"{'-':>10}"
                                                     for c in cols))
    result["files"] = files
    result["runs"] = groups
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from detect.utils import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
