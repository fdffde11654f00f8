"""Give freed heap pages back to the operating system (glibc's ``malloc_trim``).

A long-running process that frees many small objects of varying size (the replay's lz4
frame blobs: every insert into a full replay frees the evicted records' blobs and
allocates new ones) leaves free pages scattered through its heap. glibc returns only the
top of the heap by itself, so the process's resident memory can rise in steps as the
free pages shift, with no live object added (docs/benchmarks.md, the soak).
``malloc_trim(0)`` walks every arena and returns each whole free page (``MADV_DONTNEED``):
resident memory then follows what is live. It costs a few milliseconds on a heap of
a hundred MB, so :class:`Trimmer` does it at most once per period.

Elsewhere than glibc (macOS, musl) there is nothing to call: :func:`trim_heap` returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time

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
