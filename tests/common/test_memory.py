"""Freed heap pages go back to the OS (glibc's malloc_trim), at most once per period."""

import gc
import os

import psutil
import pytest

from common.memory import Trimmer, trim_heap


def _own_mb() -> float:
    m = psutil.Process().memory_info()
    return (m.rss - m.shared) / 1e6


@pytest.mark.skipif(trim_heap() is None, reason="the C library has no malloc_trim (not glibc)")
def test_trim_returns_the_scattered_free_pages_of_a_fragmented_heap():
    # The replay's pattern: many blobs of a few hundred bytes, most of them freed, a few
    # kept all through the heap (as evicted and live records interleave in a full replay).
    blobs = [os.urandom(600 + (i % 7) * 50) for i in range(150_000)]
    keep = blobs[::64]
    del blobs
    gc.collect()
    before = _own_mb()
    assert trim_heap() is True
    after = _own_mb()
    assert len(keep) == 2344
    # ~100 MB were freed but stayed resident: the kept blobs pin the heap's top.
    assert before - after > 50, f"own memory {before:.0f} -> {after:.0f} MB"


def test_the_trimmer_trims_at_most_once_per_period():
    now = [100.0]
    t = Trimmer(period_s=60.0, clock=lambda: now[0])
    assert not t.maybe()
    now[0] += 59.9
    assert not t.maybe() and t.trims == 0
    now[0] += 0.2
    assert t.maybe() and t.trims == 1
    assert not t.maybe()
    now[0] += 60.0
    assert t.maybe() and t.trims == 2
    now[0] += 30.0
    t.now()  # a trim on demand restarts the period
    assert t.trims == 3
    now[0] += 59.0
    assert not t.maybe()
    now[0] += 1.0
    assert t.maybe() and t.trims == 4


def test_a_negative_period_is_refused():
    with pytest.raises(ValueError, match="period_s"):
        Trimmer(period_s=-1)


_REUSE = """
import resource, sys
import numpy as np
from common.memory import hold_freed_memory
if sys.argv[1] == "hold":
    assert hold_freed_memory() is True
faults = []
for _ in range(5):  # an update's pattern: the same five 8 MB blocks allocated, written, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(2_000_000, np.float32) for _ in range(5)]
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del blocks
print(min(faults[1:]))
"""


def _faults_per_reuse(mode: str) -> int:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REUSE, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        env={k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(trim_heap() is None, reason="not glibc")
def test_held_memory_is_reused_without_faulting_its_pages_in_again():
    # A fresh process each (malloc's thresholds are process-wide and adapt as it runs).
    # Left to itself glibc returns the 40 MB freed at the heap's top (over its trim
    # threshold, twice its adaptive mmap threshold), so every repeat faults the pages in
    # again (2,580 faults here); held, the blocks stay in the heap for the next repeat.
    assert _faults_per_reuse("default") > 1_000
    assert _faults_per_reuse("hold") < 100
