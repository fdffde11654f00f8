"""Pure schedule functions: exploration eps and the importance-sampling beta."""

from __future__ import annotations

import numpy as np


def apex_epsilons(num_streams: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Ape-X's fixed per-stream eps: eps_i = base^(1 + alpha * i / (N - 1)), i = 0..N-1.

    One stream gets ``base`` (Ape-X's formula is undefined for N = 1). Horgan et al. give
    each one-env actor its own eps; we give each env stream its own, which is the same
    when every actor runs one env and spreads exploration finer when actors run many.
    """
    if num_streams < 1:
        raise ValueError(f"num_streams must be >= 1, got {num_streams}")
    if num_streams == 1:
        return np.array([base], dtype=np.float64)
    i = np.arange(num_streams, dtype=np.float64)
    return base ** (1.0 + alpha * i / (num_streams - 1))


def linear_epsilon(step: int | float, decay_steps: int, start: float = 1.0, end: float = 0.01) -> float:
    """Linear decay from ``start`` to ``end`` over ``decay_steps``, then constant at ``end``."""
    frac = min(max(step, 0) / decay_steps, 1.0)
    return start + frac * (end - start)


def beta_schedule(progress: float, beta_start: float, beta_end: float = 1.0) -> float:
    """PER's importance-sampling exponent, annealed linearly with run progress in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return beta_start + p * (beta_end - beta_start)
