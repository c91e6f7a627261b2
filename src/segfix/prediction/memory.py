"""What CPU inference keeps in the process: freed memory for reuse (Linux with glibc), and a bounded cache of
compiled convolution kernels.

A refine of a 1024x2048 image allocates and frees about 70 MB of tensors (the float image, the network's
activations, the decision's maps). glibc hands large blocks back to the kernel when they are freed, and the next
refine takes them again one page fault at a time: up to 17 K faults and 35 ms of kernel time per refine on a
2-core AMD EPYC, which made the median refine 0.110 s against 0.091 s with the memory kept (five interleaved
processes each, ``camvid-lite0-v5`` as shipped).

The first time a model runs on the CPU, :func:`keep_freed_memory` raises glibc's thresholds for that (blocks
under 64 MiB are reused rather than mapped afresh; up to 256 MiB of free memory stays in each malloc arena). Before
each CPU pass, free memory held beyond :data:`KEPT_FREE_BYTES` (768 MiB, all arenas together) is given back
(``malloc_trim``), so a process meeting images of every size does not pile up what each left: a 1024x2048 refine
leaves about 400 MiB free, which one image size never exceeds, and 40 refines of random sizes left 610. The setting is
process-wide: ``allow_keeping_freed_memory(False)`` before the first refine leaves glibc as it is; after it, it sets
glibc's default thresholds back. Elsewhere (macOS, Windows, musl) nothing is changed. glibc keeps free memory per
arena, and each thread that allocates gets one (at most 8 per core): a process whose own worker threads churn
arrays of tens of MB keeps up to what each thread last freed (measured: after one 1024x2048 refine, two threads
freeing 40 MB arrays 200 times each left 1295 MiB resident against 1043 with glibc as it is, eight threads 1498
against 1054). Such a process may prefer ``allow_keeping_freed_memory(False)`` and its slower refines.

oneDNN compiles the convolutions of every input size it meets and keeps them, up to 1024 in its primitive cache
and 1024 in ideep's: a process refining images of random sizes grew by 1.5 GB in 200 refines and kept growing.
:func:`bound_kernel_cache`, called with :func:`keep_freed_memory` at the first CPU run, sets both capacities
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, ``LRU_CACHE_CAPACITY``) to :data:`KERNEL_CACHE_CAPACITY` where the environment
does not set them (setting either to 1024 restores torch's own). oneDNN and ideep read them when they first compile
a convolution, so it takes effect where none ran before in the process. Measured over 120 refines of random sizes
(RSS after 40, 80, 120; then the median 1024x2048 refine): torch's 1024 grew 1524, 1803, 2143 MiB (0.126 s); 128
held 1269, 1302, 1366 MiB (0.118 s); 64 held 1218, 1218, 1235 MiB but refined slower (0.133-0.159 s: one refine
needs more kernels than that).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
import threading

__all__ = [
    "KERNEL_CACHE_CAPACITY",
    "KERNEL_CACHE_VARIABLES",
    "allow_keeping_freed_memory",
    "bound_kernel_cache",
    "freed_memory_kept",
]

_LOG = logging.getLogger(__name__)

# mallopt parameters (malloc.h) and the values used
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEPT_THRESHOLDS = {"mmap": 64 << 20, "trim": 256 << 20}
KEPT_FREE_BYTES = 768 << 20
"""Most free memory glibc may hold in all its arenas together before a CPU pass gives it back."""
DEFAULT_THRESHOLDS = {"mmap": 128 << 10, "trim": 128 << 10}  # glibc's starting values

_lock = threading.Lock()
_state = {"allowed": True, "applied": False}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]  # fmt: skip


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (loaded once), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


def glibc_mallopt():
    """glibc's ``mallopt``, or None where the C library is not glibc."""
    libc = _glibc()
    return None if libc is None else libc.mallopt


def _set(thresholds: dict[str, int]) -> bool:
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, thresholds["mmap"])) and bool(mallopt(_M_TRIM_THRESHOLD, thresholds["trim"]))


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds once per process, unless :func:`allow_keeping_freed_memory` said no; what a
    model calls before each CPU pass. Returns whether they are raised now.

    glibc then keeps up to 256 MiB of free memory per malloc arena, and a process meeting images of every size (or
    running threads of its own) would pile up what each left. So before each pass, where the free memory held in
    all arenas together exceeds :data:`KEPT_FREE_BYTES`, it is given back (``malloc_trim``): a folder of one size
    never reaches it (a 1024x2048 refine leaves about 400 MiB) and keeps its speed."""
    with _lock:
        if _state["allowed"] and not _state["applied"]:
            _state["applied"] = _set(KEPT_THRESHOLDS)
            if _state["applied"]:
                _LOG.debug("glibc keeps freed blocks under 64 MiB for reuse (segfix.prediction.memory)")
        libc = _glibc() if _state["applied"] else None
        if libc is not None and _free_bytes() > KEPT_FREE_BYTES:
            libc.malloc_trim(0)
        return _state["applied"]


def _free_bytes() -> int:
    """The free memory glibc holds in all its arenas (``mallinfo2().fordblks``; 0 before glibc 2.33)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return 0
    return int(libc.mallinfo2().fordblks)


def allow_keeping_freed_memory(allowed: bool) -> None:
    """Allow (the default) or refuse :func:`keep_freed_memory`; refusing after it ran sets glibc's default
    thresholds back (without glibc's own adjustment of them, which a set value turns off)."""
    with _lock:
        _state["allowed"] = bool(allowed)
        if not allowed and _state["applied"]:
            _set(DEFAULT_THRESHOLDS)
            _state["applied"] = False


def freed_memory_kept() -> bool:
    """Whether this process runs with the raised thresholds."""
    return _state["applied"]


KERNEL_CACHE_CAPACITY = 128
"""Compiled convolution kernels oneDNN and ideep each keep (torch's default: 1024), see :func:`bound_kernel_cache`."""

KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_cache() -> dict[str, str]:
    """Bound oneDNN's and ideep's caches of compiled kernels to :data:`KERNEL_CACHE_CAPACITY` each, where the
    environment does not set them already; returns the capacities in force from then on (what the environment
    says)."""
    with _lock:
        for name in KERNEL_CACHE_VARIABLES:
            if name not in os.environ:
                os.environ[name] = str(KERNEL_CACHE_CAPACITY)
                _LOG.debug("%s=%d (segfix.prediction.memory)", name, KERNEL_CACHE_CAPACITY)
        return {name: os.environ[name] for name in KERNEL_CACHE_VARIABLES}
