"""The n-step rule, written once: return, discount and bootstrap of every window of a stream.

The replay computes its items' learning targets with it and the actor its Ape-X initial
priorities, so the two agree bit for bit by construction (same float64 operations in the
same order), not by a test that holds two implementations together.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class NStepWindows:
    """Per start index t of :func:`n_step_windows`: all arrays have length L."""

    returns: np.ndarray  # float64[L], R_t
    discounts: np.ndarray  # float64[L], gamma^k * (1 - terminated_{b-1})
    bootstrap: np.ndarray  # int64[L], b_t: index of the record whose stack is s_{t+k}
    complete: np.ndarray  # bool[L], the whole window (its bootstrap record included) is here


def n_step_windows(rewards, terminated, ended, first, n: int, gamma: float) -> NStepWindows:
    """The n-step window of every record ``t`` of L consecutive records of one stream.

    Inputs are ``[L]`` arrays in time order, following the stream grammar of
    ``common.messages``: ``rewards[t]`` is r_t (float), ``terminated[t]`` and ``ended[t]``
    (terminated or truncated) say how the episode went on after record t, ``first[t]``
    starts a new segment (record 0 always starts one). With e_t the first index >= t with
    ``ended``, and s_t the next segment start after t (or L):

        b_t = min(t + n, e_t + 1)              the bootstrap record (after an end, the final frame)
        complete_t = b_t < s_t                 it is here, in t's segment
        b'_t = min(b_t, s_t),  k = b'_t - t    the window, cut where the records stop (k >= 1)
        R_t = sum_{j<k} gamma^j r_{t+j}
        discount_t = gamma^k * (1 - terminated_{b'_t - 1})
        bootstrap_t = b'_t

    So a terminated window has discount 0, a truncated one keeps gamma^k and bootstraps from
    the final frame (truncation is never terminal), and nothing reaches across a segment
    start. For a complete window b' = b. An incomplete one is cut at its segment's last
    record (``bootstrap = s_t``, one past it, L for the newest segment): the actor's flush
    uses that approximation, the replay never stores it. Values at final-frame records
    (action -1, not transitions) mean nothing; callers skip them.

    Returns are summed j = 0, 1, ... in float64, one vectorised step per j.
    """
    r = np.asarray(rewards, dtype=np.float64)
    terminated = np.asarray(terminated, dtype=np.bool_)
    ended = np.asarray(ended, dtype=np.bool_)
    first = np.asarray(first, dtype=np.bool_)
    length = r.size
    idx = np.arange(length)
    starts = np.flatnonzero(first[1:]) + 1
    seg_end = np.append(starts, length)[np.searchsorted(starts, idx, side="right")]
    end_at = np.where(ended, idx, length + n)  # past every window when there is no end
    next_end = np.minimum.accumulate(end_at[::-1])[::-1] if length else end_at
    reach = np.minimum(idx + n, next_end + 1)
    boot = np.minimum(reach, seg_end)
    k = boot - idx
    gamma_pow = float(gamma) ** np.arange(n + 1, dtype=np.float64)
    padded = np.concatenate([r, np.zeros(n)])
    returns = np.zeros(length)
    for j in range(n):
        returns += np.where(j < k, gamma_pow[j] * padded[idx + j], 0.0)
    discounts = gamma_pow[k] * ~terminated[boot - 1] if length else np.zeros(0)
    return NStepWindows(returns=returns, discounts=discounts, bootstrap=boot.astype(np.int64), complete=reach < seg_end)
