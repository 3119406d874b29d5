"""Keep glibc's malloc from handing training buffers back to the kernel after every step.

A CPU training step allocates and frees the same few hundred MB of activations and gradients
each iteration. glibc serves blocks above a dynamic threshold with ``mmap`` and trims the heap
top on ``free``, so every step page-faults those megabytes back in. On the development machine
(2 cores, SSD Lite0 at 224 px, batch 32, ``--workers 0``, groceries-voc) that kernel time was as
large as the compute: 14 images/s, 13 s of system time per 19 s of user time. With the settings
below applied before torch is imported (``detect train``/``detect tune`` do it first thing):
28-29 images/s, 1.9 s of system time, peak RSS 4.1 GB instead of 3.1 GB. Applied later, in a
process that has already used torch, they still help but less (20-21 images/s).

This is what ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``/``MALLOC_TOP_PAD_`` in the
environment would do; a user's own ``MALLOC_*`` settings (or a preloaded jemalloc/tcmalloc)
win. Linux with glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Blocks up to 32 MiB come from the heap (glibc's upper limit for this threshold on 64-bit),
# the heap top is never trimmed, and it grows 2 GiB (of address space) at a time.
SETTINGS = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 2**31 - 1}

_done = False


def keep_heap_for_training() -> bool:
    """Apply :data:`SETTINGS` once per process with ``mallopt``; return True when they were
    applied (glibc, no ``MALLOC_*`` tuning in the environment, no other allocator preloaded)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "LD_PRELOAD" in os.environ:
        return False  # the user chose their own allocator settings
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl and others
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in SETTINGS.items()):
        return False
    _done = True
    return True


WAIT_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def passive_thread_wait() -> bool:
    """Make torch's OpenMP threads sleep, not spin, when they wait for each other: set
    ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (OpenMP reads it once, when it starts).

    With the default (spinning) policy, a thread that reaches the end of a parallel region first
    keeps its core busy until its siblings arrive. Alone on the machine that costs nothing, but
    two trainings on 2 cores (4 threads) spin on each other's time slices: each ran 10-20x
    slower than alone. Sleeping threads hand the core over (bench/two_trainings.py measures both).
    A user's own ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` wins. Returns True
    when the policy was set here.
    """
    if any(k in os.environ for k in WAIT_ENV):
        return False
    if "torch" in sys.modules:  # too late: OpenMP has read its environment already
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
