#!/usr/bin/env python3
"""``detect serve`` under bounded load from localhost: latency against ``Predictor.predict``,
throughput with batching on and off, bad requests, and the server's memory.

    python bench/serve.py                          # shipped weights, a 1-megapixel synthetic shelf JPEG
    python bench/serve.py --weights RUN/best.pt --requests 2000 --clients 16
    python bench/serve.py --size 480               # a photo the model reads whole: one input per request

Measured in one run, on the same JPEG, interleaved so that a machine whose load changes (a
training beside it) weighs on both sides of each comparison alike:
1. ``Predictor.predict`` on the decoded image in this process, the same with the JPEG decode,
   and one client's request to the server (``POST /v1/detect``, raw body), taken in turns,
   ``--single`` of each (p50/p95);
2. ``--clients`` concurrent clients, ``--burst`` requests each, against a server with batching
   (``--max-batch``, ``--max-wait-ms``) and the same server with ``--max-batch 1``, in
   ``--rounds`` alternating rounds (the median round of each);
4. bad requests (truncated JPEG, not an image, a 50,000 x 50,000 PNG header, a wrong multipart
   field, a body over the limit): each must be a 4xx with a message;
5. the batching server's resident memory after warm-up and after ``--requests`` more requests
   (16 clients, good and bad mixed).

Servers run as ``detect serve`` subprocesses on 127.0.0.1 (free ports), the two side by side; all
traffic stays on localhost and is bounded in count. Prints a table and writes JSON (default
``bench/out/serve.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(args, max_batch: int):
    """A ``detect serve`` subprocess; yields ``(base URL, pid)``."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "detect", "serve", "--port", str(port), "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--max-upload-mb", "8", "--log-level", "warning", "--device", "cpu"]
    if args.weights:
        cmd += ["--weights", args.weights]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"detect serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("detect serve did not answer /health in 180 s")
            time.sleep(0.3)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def interleaved(url: str, jpeg: bytes, pred, n: int) -> tuple[list[float], list[float], list[float]]:
    """``n`` turns of (predict on the decoded image, decode + predict, one request): seconds each."""
    import cv2
    import httpx

    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    t_pred, t_both, t_req = [], [], []
    with httpx.Client(timeout=60) as c:
        for i in range(n + 3):
            t0 = time.perf_counter()
            pred.predict([decoded])
            t1 = time.perf_counter()
            pred.predict([cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)])
            t2 = time.perf_counter()
            c.post(url + "/v1/detect", content=jpeg, headers={"Content-Type": "image/jpeg"}).raise_for_status()
            t3 = time.perf_counter()
            if i >= 3:  # warm-up
                t_pred.append(t1 - t0)
                t_both.append(t2 - t1)
                t_req.append(t3 - t2)
    return t_pred, t_both, t_req


def batch_ceiling(pred, jpeg: bytes, batch: int, n: int) -> dict:
    """What batching can gain at most here: ``Predictor.predict`` of ``batch`` copies of the image
    at once against one at a time, per image, in turns (median ms)."""
    import cv2

    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    one, many = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        for _ in range(batch):
            pred.predict([image])
        t1 = time.perf_counter()
        pred.predict([image] * batch)
        t2 = time.perf_counter()
        one.append((t1 - t0) / batch)
        many.append((t2 - t1) / batch)
    a, b = float(np.median(one)) * 1000, float(np.median(many)) * 1000
    return {"batch": batch, "per_image_ms_batch1": round(a, 1), f"per_image_ms_batch{batch}": round(b, 1),
            "speedup": round(a / b, 2)}


def many_clients(url: str, jpeg: bytes, clients: int, each: int, bad: list | None = None) -> dict:
    """``clients`` threads, ``each`` requests each; with ``bad``, every 10th request is one of them."""
    import httpx

    statuses: dict[str, int] = {}
    lock = threading.Lock()
    batch_sizes: list[int] = []

    def run(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(each):
                if bad and i % 10 == 9:
                    name, kwargs = bad[(k + i) % len(bad)]
                    r = c.post(url + "/v1/detect", **kwargs)
                else:
                    r = c.post(url + "/v1/detect", content=jpeg, headers={"Content-Type": "image/jpeg"})
                    if r.status_code == 200:
                        with lock:
                            batch_sizes.append(r.json()["time_ms"]["batch_size"])
                with lock:
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    n = clients * each
    return {"requests": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 2), "statuses": statuses,
            "mean_batch": round(float(np.mean(batch_sizes)), 2) if batch_sizes else None}


def png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def bad_requests(jpeg: bytes) -> list[tuple[str, dict]]:
    raw = {"Content-Type": "image/jpeg"}
    return [
        ("truncated JPEG", {"content": jpeg[: len(jpeg) // 3], "headers": raw}),
        ("not an image", {"content": b"%PDF-1.4 this is not an image" * 10, "headers": raw}),
        ("50,000 x 50,000 PNG header", {"content": png_header(50_000, 50_000), "headers": {"Content-Type": "image/png"}}),
        ("wrong multipart field", {"files": {"photo": ("shelf.jpg", jpeg, "image/jpeg")}}),
        ("huge body (9 MiB > 8 MiB limit)", {"content": b"\0" * (9 * 1024 * 1024), "headers": raw}),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="default: the shipped weights")
    ap.add_argument("--single", type=int, default=100, help="requests (and predict calls) of the 1-client test")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--burst", type=int, default=10, help="requests per client in each throughput round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per server")
    ap.add_argument("--requests", type=int, default=2000, help="requests of the memory test")
    ap.add_argument("--size", type=int, default=1155, help="longer side of the synthetic shelf photo (1155: 1.0 MP, "
                    "sliced: a probe and slices per photo; 480 or less: one network input per photo)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "serve.json"))
    args = ap.parse_args(argv)

    import cv2
    import httpx

    from detect.data.synth import render_scene
    from detect.infer.predict import Predictor

    image = render_scene(7, 0, size=args.size, kind="shelf").image  # 1155: 1155 x 866 = 1.0 megapixels
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    h, w = image.shape[:2]
    out: dict = {"image": {"width": w, "height": h, "jpeg_bytes": len(jpeg)}, "cpu_count": os.cpu_count(),
                 "torch_threads": None}

    import torch

    out["torch_threads"] = torch.get_num_threads()
    pred = Predictor(args.weights, device="cpu", conf=0.05)
    with server(args, args.max_batch) as (url, pid), server(args, 1) as (url_off, _):
        t_pred, t_both, t_one = interleaved(url, jpeg, pred, args.single)
        out["batch_ceiling"] = batch_ceiling(pred, jpeg, args.max_batch, max(5, args.single // 5))
        del pred
        out["predict_ms"] = {"p50": round(pct(t_pred, 50), 1), "p95": round(pct(t_pred, 95), 1)}
        out["decode_predict_ms"] = {"p50": round(pct(t_both, 50), 1), "p95": round(pct(t_both, 95), 1)}
        out["one_client_ms"] = {"p50": round(pct(t_one, 50), 1), "p95": round(pct(t_one, 95), 1)}
        rounds = {"on": [], "off": []}
        for _ in range(args.rounds):
            rounds["on"].append(many_clients(url, jpeg, args.clients, args.burst))
            rounds["off"].append(many_clients(url_off, jpeg, args.clients, args.burst))
        for side in ("on", "off"):
            runs = sorted(rounds[side], key=lambda r: r["per_s"])
            out[f"batching_{side}"] = {**runs[len(runs) // 2], "rounds_per_s": [r["per_s"] for r in rounds[side]]}
        bad = []
        for name, kwargs in bad_requests(jpeg):
            r = httpx.post(url + "/v1/detect", timeout=60, **kwargs)
            msg = r.json().get("error", {}).get("message", "") if r.headers.get("content-type", "").startswith("application/json") else r.text[:80]
            bad.append({"request": name, "status": r.status_code, "message": msg})
        out["bad_requests"] = bad
        out["alive_after_bad"] = httpx.get(url + "/health", timeout=10).status_code == 200
        rss0 = rss_mb(pid)
        per = max(1, args.requests // args.clients)
        half = many_clients(url, jpeg, args.clients, per // 2, bad=bad_requests(jpeg))
        rss1 = rss_mb(pid)
        rest = many_clients(url, jpeg, args.clients, per - per // 2, bad=bad_requests(jpeg))
        rss2 = rss_mb(pid)
        statuses: dict[str, int] = {}
        for part in (half, rest):
            for k, v in part["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        out["memory"] = {"requests": half["requests"] + rest["requests"], "statuses": statuses,
                         "rss_mb_start": round(rss0, 1), "rss_mb_half": round(rss1, 1), "rss_mb_end": round(rss2, 1)}

    on, off = out["batching_on"], out["batching_off"]
    out["ratios"] = {"one_client_p95_over_predict_p95": round(out["one_client_ms"]["p95"] / out["predict_ms"]["p95"], 2),
                     "one_client_p95_over_decode_predict_p95": round(out["one_client_ms"]["p95"] / out["decode_predict_ms"]["p95"], 2),
                     "throughput_on_over_off": round(on["per_s"] / off["per_s"], 2)}

    rows = [
        (f"Predictor.predict, decoded {w}x{h} image (p50 / p95 ms)", f"{out['predict_ms']['p50']} / {out['predict_ms']['p95']}"),
        ("JPEG decode + Predictor.predict (p50 / p95 ms)", f"{out['decode_predict_ms']['p50']} / {out['decode_predict_ms']['p95']}"),
        ("1 client, POST /v1/detect (p50 / p95 ms)", f"{out['one_client_ms']['p50']} / {out['one_client_ms']['p95']}"),
        ("  p95 ratio to predict / to decode+predict", f"{out['ratios']['one_client_p95_over_predict_p95']} / "
         f"{out['ratios']['one_client_p95_over_decode_predict_p95']}"),
        (f"{args.clients} clients, batching on (max {args.max_batch}, {args.max_wait_ms} ms): req/s",
         f"{on['per_s']} (rounds {on['rounds_per_s']}, mean batch {on['mean_batch']}, statuses {on['statuses']})"),
        (f"{args.clients} clients, batching off (max-batch 1): req/s",
         f"{off['per_s']} (rounds {off['rounds_per_s']}, statuses {off['statuses']})"),
        ("  throughput on / off", str(out["ratios"]["throughput_on_over_off"])),
        (f"  ceiling: Predictor.predict per image, batch 1 vs {args.max_batch} (ms)",
         f"{out['batch_ceiling']['per_image_ms_batch1']} vs {out['batch_ceiling'][f'per_image_ms_batch{args.max_batch}']} "
         f"= {out['batch_ceiling']['speedup']}x"),
    ]
    rows += [(f"bad: {b['request']}", f"{b['status']} {b['message'][:70]}") for b in out["bad_requests"]]
    m = out["memory"]
    rows += [("server alive after bad requests", str(out["alive_after_bad"])),
             (f"memory over {m['requests']} requests (10% bad): RSS MB start / half / end",
              f"{m['rss_mb_start']} / {m['rss_mb_half']} / {m['rss_mb_end']} (statuses {m['statuses']})")]
    width = max(len(r[0]) for r in rows)
    print(f"image {w}x{h} JPEG {len(jpeg):,} bytes; {os.cpu_count()} CPUs, torch threads {out['torch_threads']}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
