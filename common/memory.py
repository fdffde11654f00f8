"""Give freed heap pages back to the operating system (glibc's ``malloc_trim``).

A long-running process that frees many small objects of varying size (the replay's lz4
frame blobs: every insert into a full replay frees the evicted records' blobs and
allocates new ones) leaves free pages scattered through its heap. glibc returns only the
top of the heap by itself, so the process's resident memory can rise in steps as the
free pages shift, with no live object added (docs/benchmarks.md, the soak).
``malloc_trim(0)`` walks every arena and returns each whole free page (``MADV_DONTNEED``):
resident memory then follows what is live. It costs a few milliseconds on a heap of
a hundred MB, so :class:`Trimmer` does it at most once per period.

The learner wants the opposite: an update allocates and frees the same few-MB tensors
(the float batch, each layer's activations and gradients) every step, and glibc, left to
itself, may hand those pages back and fault them in again on the next step: measured on
a CPU learner at batch 32, 3,200-3,900 page faults per update in some runs (22.8-24.7
updates/s) and ~30 in others (28.4), depending on how its dynamic thresholds settled.
:func:`hold_freed_memory` fixes the thresholds so freed blocks stay in the heap for the
next step (25-41 faults per update, 27.7-28.7 updates/s in every run).

Elsewhere than glibc (macOS, musl) there is nothing to call: :func:`trim_heap` and
:func:`hold_freed_memory` return None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time

#: glibc's mallopt parameters, and the values hold_freed_memory sets: blocks up to 32 MB
#: (glibc's largest mmap threshold on 64-bit) come from the heap, and the heap keeps up to
#: 1 GB of free memory at its top instead of returning it.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HOLD_MMAP_THRESHOLD, HOLD_TRIM_THRESHOLD = 32 << 20, 1 << 30

_libc = None
if sys.platform.startswith("linux"):
    try:
        _lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc = _lib if hasattr(_lib, "malloc_trim") else None
    except OSError:
        _libc = None


def trim_heap() -> bool | None:
    """Return free heap pages to the OS. True if memory was released, False if none could
    be, None where the C library has no ``malloc_trim``."""
    if _libc is None:
        return None
    return bool(_libc.malloc_trim(0))


def hold_freed_memory() -> bool | None:
    """For a process that allocates and frees the same large blocks every step (the
    learner): keep freed memory for reuse instead of returning it to the OS. True if both
    settings took, None where the C library has no ``mallopt``. Process-wide; call once,
    at start."""
    if _libc is None or not hasattr(_libc, "mallopt"):
        return None
    mmap_ok = _libc.mallopt(M_MMAP_THRESHOLD, HOLD_MMAP_THRESHOLD)
    trim_ok = _libc.mallopt(M_TRIM_THRESHOLD, HOLD_TRIM_THRESHOLD)
    return bool(mmap_ok and trim_ok)


class Trimmer:
    """Calls :func:`trim_heap` from :meth:`maybe` at most once per ``period_s`` seconds."""

    def __init__(self, period_s: float = 60.0, clock=time.monotonic):
        if period_s < 0:
            raise ValueError(f"period_s must be >= 0, got {period_s}")
        self.period_s = period_s
        self.clock = clock
        self.last = clock()
        self.trims = 0

    def now(self) -> None:
        """Trim now (after a large temporary is freed); the period restarts."""
        self.last = self.clock()
        self.trims += 1
        trim_heap()

    def maybe(self) -> bool:
        """Trim if the period has passed since the last trim; True if it trimmed."""
        if self.clock() - self.last < self.period_s:
            return False
        self.now()
        return True
