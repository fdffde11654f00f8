"""SumTree against a brute-force cumulative-sum reference."""

import numpy as np
import pytest

from replay_server import sum_tree
from replay_server.sum_tree import SumTree


@pytest.fixture(params=["whole levels near the root", "touched nodes only"])
def level_mode(request, monkeypatch):
    """Runs a test with both ways of recomputing parents (SumTree.update picks per level)."""
    if request.param == "touched nodes only":
        monkeypatch.setattr(sum_tree, "_WHOLE_LEVEL_NODES", 0)


def reference_find(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Item whose interval [cumsum[i-1], cumsum[i]) holds each target (zero-value items have empty intervals)."""
    return np.searchsorted(np.cumsum(values), targets, side="right")


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 64, 1000, 20_000])
def test_update_total_get_find_match_reference(capacity, level_mode):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    values = np.zeros(capacity)
    for _ in range(20):
        k = int(rng.integers(1, min(2 * capacity, 3000) + 1))
        idx = rng.integers(0, capacity, size=k)
        # Quarter-integers sum exactly in float64, so the reference and tree agree bit for bit.
        val = rng.integers(0, 40, size=k) / 4.0
        val[rng.random(k) < 0.3] = 0.0
        tree.update(idx, val)
        for i, v in zip(idx, val):  # sequential writes: the last one wins
            values[i] = v
        assert tree.total() == pytest.approx(values.sum(), abs=0)
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), values)
        if values.sum() > 0:
            targets = rng.random(500) * values.sum()
            found = tree.find(targets)
            np.testing.assert_array_equal(found, reference_find(values, targets))
            assert np.all(values[found] > 0)


def test_duplicates_last_write_wins(level_mode):
    tree = SumTree(8)
    tree.update(np.array([3, 5, 3, 3, 5]), np.array([1.0, 2.0, 7.0, 4.0, 0.5]))
    assert tree.get(np.array([3, 5])).tolist() == [4.0, 0.5]
    assert tree.total() == 4.5


def test_find_never_returns_a_zero_leaf_at_the_edges():
    rng = np.random.default_rng(0)
    tree = SumTree(1000)
    values = rng.random(1000) * 1e-3
    values[rng.random(1000) < 0.5] = 0.0
    values[-100:] = 0.0  # trailing zeros: rounding past the last positive leaf must not land here
    tree.update(np.arange(1000), values)
    total = tree.total()
    targets = np.concatenate([[0.0, -1.0, total, total * 2, np.nextafter(total, 0)], rng.random(1000) * total])
    found = tree.find(targets)
    assert np.all(values[found] > 0)
    assert found[0] == np.flatnonzero(values > 0)[0]
    assert found[2] == np.flatnonzero(values > 0)[-1]


def test_find_steps_around_zero_subtrees_that_rounding_would_enter():
    # Found by random search: without the guard, targets just below the total descend into
    # leaf 7 (value 0), because the rounded sums along the path overshoot the leaf values.
    values = np.array(
        [0.08355076443517134, 3.6351609226847685, 0.0, 1.3086740653491862e-15, 0.0, 0.0, 9.127432079337364, 0.0]
    )
    tree = SumTree(8)
    tree.update(np.arange(8), values)
    total = tree.total()
    found = tree.find(np.nextafter(total, 0) - np.arange(20) * np.spacing(total))
    assert np.all(found == 6)


def test_find_samples_proportionally():
    rng = np.random.default_rng(1)
    values = np.array([1.0, 0.0, 3.0, 6.0])
    tree = SumTree(4)
    tree.update(np.arange(4), values)
    counts = np.bincount(tree.find(rng.random(100_000) * tree.total()), minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), values / values.sum(), atol=0.01)


def test_empty_tree_and_bad_input():
    tree = SumTree(5)
    with pytest.raises(ValueError):
        tree.find(np.array([0.0]))
    with pytest.raises(IndexError):
        tree.update(np.array([5]), np.array([1.0]))
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([-1.0]))
    tree.update(np.array([], dtype=np.int64), np.array([]))
    assert tree.total() == 0
