"""Reverb's samples-per-insert rate limiter: the side that runs ahead waits.

With ``spi`` samples per insert, ``diff = inserts * spi - samples`` must stay within

    min_diff = spi * min_size - tolerance   <=   diff   <=   max_diff = spi * min_size + tolerance

An insert is allowed while ``diff + spi <= max_diff`` (or while fewer than ``min_size``
items have been inserted); a sample of n while at least ``min_size`` items are sampleable
and ``diff - n >= min_diff``. Over a run, samples / (inserts - min_size) tends to ``spi``
and never strays from it by more than ``tolerance`` samples. ``spi=None`` turns the limit
off (Ape-X's free-running actors): inserts always pass, samples wait only for min_size.
"""

from __future__ import annotations

import math


class RateLimiter:
    def __init__(self, samples_per_insert: float | None, min_size: int, tolerance: float):
        if samples_per_insert is not None:
            if not samples_per_insert > 0:
                raise ValueError(f"samples_per_insert must be > 0, got {samples_per_insert}")
            if tolerance < samples_per_insert:
                raise ValueError(
                    f"tolerance {tolerance} must be at least samples_per_insert {samples_per_insert}, or nothing could be inserted"
                )
        self.spi = samples_per_insert
        self.min_size = int(min_size)
        self.tolerance = float(tolerance)
        self.inserts = 0
        self.samples = 0

    @property
    def diff(self) -> float:
        return self.inserts * (self.spi or 0.0) - self.samples

    def insert_allowance(self) -> float:
        """How many more items may be inserted now (``inf`` when the limit is off)."""
        if self.spi is None:
            return math.inf
        max_diff = self.spi * self.min_size + self.tolerance
        return max(math.floor((max_diff - self.diff) / self.spi), self.min_size - self.inserts, 0)

    def can_sample(self, n: int, sampleable: int) -> bool:
        if sampleable < max(n, self.min_size):
            return False
        if self.spi is None:
            return True
        return self.diff - n >= self.spi * self.min_size - self.tolerance

    def on_insert(self, n: int) -> None:
        self.inserts += int(n)

    def on_sample(self, n: int) -> None:
        self.samples += int(n)

    def state(self) -> dict:
        return {"inserts": self.inserts, "samples": self.samples}

    def load_state(self, state: dict) -> None:
        """Restore the counters of :meth:`state` (the limits stay this limiter's own);
        ValueError, changing nothing, unless both are ints >= 0."""
        inserts, samples = state.get("inserts"), state.get("samples")
        for name, value in (("inserts", inserts), ("samples", samples)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"rate limiter state: {name} must be an int >= 0, got {value!r}")
        self.inserts, self.samples = inserts, samples
