"""detect.engine.cpu_alloc: the mallopt settings really take effect, and a user's own malloc
settings are left alone. Each case runs in a fresh interpreter (mallopt is process-wide)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")

# Allocate a 20 MiB block and report how many blocks glibc's malloc served by mmap before and
# while it is held (mallinfo2().hblks). By default a block this size is mmapped (threshold 128 KiB
# at start); with the training settings it must come from the heap.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys
    from detect.engine.cpu_alloc import keep_heap_for_training
    applied = keep_heap_for_training() if sys.argv[1] == "keep" else None
    again = keep_heap_for_training() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblks
    p = libc.malloc(20 << 20)
    during = libc.mallinfo2().hblks
    libc.free(p)
    print(applied, again, during - before)
    """
)


def _probe(mode: str, **env: str) -> list[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    e.update(env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    e["PYTHONPATH"] = root + os.pathsep + e.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=e, timeout=60)
    if r.returncode and "mallinfo2" in r.stderr:
        pytest.skip("this libc has no mallinfo2 (glibc < 2.33 or not glibc)")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_default_malloc_mmaps_a_large_block():
    assert _probe("plain") == ["None", "None", "1"]  # the probe can see an mmapped block


def test_training_settings_keep_large_blocks_on_the_heap():
    assert _probe("keep") == ["True", "True", "0"]  # applied, idempotent, no mmap


def test_user_malloc_settings_win():
    # the user asked for a 64 KiB mmap threshold: we must not override it
    assert _probe("keep", MALLOC_MMAP_THRESHOLD_="65536") == ["False", "False", "1"]


def test_passive_thread_wait_is_set_before_torch_and_yields_to_the_user():
    code = ("import os, sys; from detect.engine.cpu_alloc import passive_thread_wait as p; "
            "r = p(); print(r, os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "PASSIVE", "False"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "1000"}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "None", "False"]  # the user's own setting wins
    late = subprocess.run([sys.executable, "-c", "import torch; " + code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()
    assert late[0] == "False"  # too late once OpenMP has started
