"""``detect proposals``: its options and handler (the proposal cache itself:
:mod:`detect.engine.proposal_cache`)."""

from __future__ import annotations

import argparse
import os
import sys

from detect.checks import COUNT, NONNEG
from detect.errors import UsageError


def add_proposals_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect proposals``."""
    p.add_argument("cache", help="annotation cache .pkl (from xml2pkl), or any --data: the cache of its --split")
    p.add_argument("--split", help="split of a --data given instead of a cache (default: every image)")
    p.add_argument("-o", "--output", help="proposal cache (default: <cache>.ss-<mode>.pkl)")
    p.add_argument("--mode", choices=["fast", "quality"], default="fast", help="selective search strategy")
    p.add_argument("--max", type=COUNT, default=2000, help="proposals kept per image")
    p.add_argument("--resize", type=NONNEG, default=500, help="longer side used for the search (0: original)")
    p.add_argument("--workers", type=NONNEG, default=0, help="parallel processes (0: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_proposals(args: argparse.Namespace) -> int:
    """``detect proposals CACHE [-o OUT] [--mode fast|quality] [--max N] [--resize PX] [--workers N]``."""
    from detect.data.cache.cache_file import CacheError, load_cache
    from detect.data.spec import is_cache_path, resolve_data
    from detect.engine.proposal_cache import build_proposal_cache, default_output, recall_table
    from detect.utils import check_output_path

    cache = args.cache
    if not is_cache_path(cache) and os.path.exists(cache):  # any --data: its split's cache, built or reused
        cache = resolve_data(cache, getattr(args, "split", None) or "all").path  # DatasetError is a UsageError
    output = args.output or default_output(cache, args.mode)
    if not os.path.isfile(cache):
        raise UsageError(f"annotation cache {cache} not found (make it with `detect xml2pkl`)")
    bar = None
    try:
        ann = load_cache(cache)
        check_output_path(output, [cache, *(r.image for r in ann.records if r.image)])
        if not args.no_progress and len(ann.records) >= 50:
            from tqdm import tqdm

            bar = tqdm(total=len(ann.records), desc="selective search", unit="img", dynamic_ncols=True, file=sys.stderr)
        res = build_proposal_cache(cache, output, args.mode, args.max, args.resize, args.workers,
                                   progress=bar.update if bar is not None else None, annotations=ann)
    except (CacheError, ValueError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e}") from None
    finally:
        if bar is not None:
            bar.close()
    d = res.data
    secs = d["seconds"][d["seconds"] > 0]
    per = f"{secs.mean():.3f} s/image on one core" if len(secs) else "n/a"
    print(f"{output}: {len(d['images'])} images, {len(res.computed)} searched, {res.reused} reused "
          f"({d['method']['mode']} mode, max {d['method']['max']}, resize {d['method']['resize']}); "
          f"selective search {per}; {res.seconds:.1f} s total")
    print(recall_table(d, ann.records))
    for path, why in res.failed[:10]:
        print(f"{path}: {why}; no proposals", file=sys.stderr)
    if res.failed:
        print(f"{len(res.failed)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0
