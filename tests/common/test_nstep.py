"""common.nstep.n_step_windows against the shared table of hand-written transitions."""

import numpy as np
import pytest

from common.nstep import n_step_windows
from tests.support.nstep_cases import CASES, GAMMA, IDS, N, episode


def windows(records, n=N, gamma=GAMMA):
    a, r, te, tr, fi = (np.array(col) for col in zip(*records))
    return a, n_step_windows(r.astype(np.float32), te, te | tr, fi, n, gamma)


@pytest.mark.parametrize("name,streams,expected", CASES, ids=IDS)
def test_table(name, streams, expected):
    for sid, records in streams.items():
        actions, w = windows(records)
        items = np.flatnonzero(w.complete & (actions != -1))
        assert sorted((sid, int(t)) for t in items) == sorted(k for k in expected if k[0] == sid)
        for t in items.tolist():
            assert (w.returns[t], w.discounts[t], w.bootstrap[t]) == expected[(sid, t)], (sid, t)


def test_incomplete_windows_are_cut_at_the_newest_record():
    # Open episode r = 1, 2, 4, 8: t = 1 reaches past the last record (3): k = 3 records are
    # here but the bootstrap (4) is not; t = 2, 3 are cut at 4 with k = 2, 1.
    _, w = windows(episode([1, 2, 4, 8]))
    assert w.complete.tolist() == [True, False, False, False]
    assert w.returns.tolist() == [3, 6, 8, 8]
    assert w.discounts.tolist() == [0.125, 0.125, 0.25, 0.5]
    assert w.bootstrap.tolist() == [3, 4, 4, 4]


def test_windows_never_cross_a_segment_start():
    # An actor restart at record 2: the first segment's windows are cut there, incomplete.
    _, w = windows(episode([1, 2]) + episode([4, 8, 16, 32]), n=2)
    assert w.complete.tolist() == [False, False, True, True, False, False]
    assert w.returns.tolist() == [2, 2, 8, 16, 32, 32]
    assert w.bootstrap.tolist() == [2, 2, 4, 5, 6, 6]


def test_float_returns_are_summed_in_order_and_empty_input():
    rng = np.random.default_rng(0)
    r = rng.standard_normal(40).astype(np.float32)
    flags = np.zeros(40, bool)
    w = n_step_windows(r, flags, flags, flags, 5, 0.9)
    g = 0.9 ** np.arange(6, dtype=np.float64)
    for t in range(35):
        ret = 0.0
        for j in range(5):
            ret += g[j] * float(r[t + j])
        assert w.returns[t] == ret  # bit for bit: j = 0, 1, ... in float64
        assert w.discounts[t] == g[5] and w.bootstrap[t] == t + 5
    e = n_step_windows([], [], [], [], 3, 0.9)
    assert e.returns.shape == e.discounts.shape == e.bootstrap.shape == e.complete.shape == (0,)
