"""A vectorized sum tree: priorities of many items, updated and searched in batches.

Layout: one ``float64[2 * L]`` array, L a power of two >= capacity; the root is node 1,
node i has children 2i and 2i+1, leaves are nodes L .. 2L-1 (leaf j = item j). Node 0 is
unused. Leaves past ``capacity`` stay 0 and so are never found.

Every operation walks the tree level by level for all items at once (a loop over the
log2(L) levels, never over items), which is what makes batches of hundreds cheap.
"""

from __future__ import annotations

import numpy as np

#: Levels with at most this many nodes are recomputed whole on update.
_WHOLE_LEVEL_NODES = 4096


class SumTree:
    """Non-negative values ``float64[capacity]`` with their running sums.

    ``find(targets)`` returns, for each target in ``[0, total)``, the item i with
    ``cumsum[i-1] <= target < cumsum[i]`` (prefix sums in item order), i.e. items are hit
    with probability value / total when targets are uniform on ``[0, total)``.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._depth = (self.capacity - 1).bit_length()  # levels below the root
        self._leaves = 1 << self._depth
        self._tree = np.zeros(2 * self._leaves, dtype=np.float64)

    def total(self) -> float:
        """Sum of all values."""
        return float(self._tree[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Values ``float64[K]`` of items ``int64[K]``."""
        idx = np.asarray(indices, dtype=np.int64)
        return self._tree[idx + self._leaves]

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set items ``int64[K]`` to ``float64[K]`` (>= 0); for repeated indices the last write wins."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        val = np.asarray(values, dtype=np.float64).ravel()
        if val.size == 1 and idx.size != 1:
            val = np.broadcast_to(val, idx.shape)
        if idx.shape != val.shape:
            raise ValueError(f"indices {idx.shape} and values {val.shape} differ in shape")
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"SumTree index outside 0..{self.capacity - 1}")
        if not (np.all(np.isfinite(val)) and np.all(val >= 0)):
            raise ValueError("SumTree values must be finite and >= 0")
        if idx.size > 1:
            # NumPy does not promise which of repeated fancy-index writes lands, so keep
            # the last occurrence explicitly: unique over the reversed order.
            uniq, pos_in_rev = np.unique(idx[::-1], return_index=True)
            val = val[::-1][pos_in_rev]
            idx = uniq
        nodes = idx + self._leaves
        tree = self._tree
        tree[nodes] = val
        # Parents are recomputed from their children (not patched with deltas), so no
        # rounding error accumulates. Repeated parents in `nodes` all write the same sum.
        # Near the root a level has few nodes: recomputing the whole level with one
        # strided add is cheaper than four fancy-indexing calls on the touched nodes.
        size = self._leaves  # nodes in the level of `nodes`
        while size > 1:
            size >>= 1
            if size <= max(_WHOLE_LEVEL_NODES, 4 * nodes.size):
                np.add(tree[2 * size : 4 * size : 2], tree[2 * size + 1 : 4 * size : 2], out=tree[size : 2 * size])
                continue
            nodes = nodes >> 1
            left = nodes << 1
            tree[nodes] = tree[left] + tree[left + 1]

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Items ``int64[K]`` whose prefix-sum interval holds each target ``float64[K]``.

        Targets are clipped to ``[0, total)``. The descent never enters a child whose
        sum is 0, so with ``total > 0`` it always ends on a leaf with a positive value,
        even when rounding makes a target land past the last positive leaf.
        """
        total = self._tree[1]
        if not total > 0:
            raise ValueError("SumTree.find on a tree whose total is 0")
        t = np.clip(np.asarray(targets, dtype=np.float64).ravel(), 0.0, np.nextafter(total, 0.0))
        tree = self._tree
        nodes = np.ones(t.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = nodes << 1
            left_sum = tree[left]
            right_sum = tree[left + 1]
            go_right = ((t >= left_sum) & (right_sum > 0)) | (left_sum <= 0)
            t = np.where(go_right, t - left_sum, t)
            nodes = left + go_right
        return nodes - self._leaves
