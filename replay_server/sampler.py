"""Which item a sample draws: proportional priorities in a sum tree, or uniform.

Reverb's split: the buffer decides what is stored and sampleable, this decides how likely
each sampleable item is. Leaves are slots; the tree holds ``(p + priority_eps) ** alpha``
for sampleable items (1 each when not prioritized) and 0 for every other slot. A new item
starts at the priority its actor sent (plus eps), else at the running max priority
(starting at 1). Sampling is stratified: one uniform draw in each of B equal slices of the
total. Importance weights are

    w_i = (N * P(i)) ** -beta / max_j w_j

over the batch, with N the number of sampleable items (all 1 when not prioritized).
"""

from __future__ import annotations

import numpy as np

from replay_server.sum_tree import SumTree


class PrioritySampler:
    def __init__(self, capacity: int, prioritized: bool, alpha: float, priority_eps: float):
        self.capacity = int(capacity)
        self.prioritized = bool(prioritized)
        self.alpha = float(alpha)
        self.priority_eps = float(priority_eps)
        self.max_priority = 1.0
        self._tree = SumTree(self.capacity)

    def initial_leaves(self, sent: np.ndarray) -> np.ndarray:
        """Leaves ``float64[K]`` of new items whose actors sent ``sent`` (float[K], NaN: none).

        Sent priorities raise the running max first, so an item without one in the same
        insert starts at least as high."""
        if not self.prioritized:
            return np.ones(sent.size)
        prio = np.asarray(sent, dtype=np.float64) + self.priority_eps
        known = ~np.isnan(prio)
        if known.any():
            self.max_priority = max(self.max_priority, float(prio[known].max()))
        prio[~known] = self.max_priority
        return prio**self.alpha

    def set_leaves(self, slots: np.ndarray, leaves: np.ndarray) -> None:
        """Write leaves as they are; for repeated slots the last write wins."""
        self._tree.update(slots, leaves)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities (finite, >= 0) of sampleable items; nothing changes when uniform."""
        if slots.size and self.prioritized:
            p = np.asarray(priorities, dtype=np.float64) + self.priority_eps
            self.max_priority = max(self.max_priority, float(p.max()))
            self._tree.update(slots, p**self.alpha)

    def draw(
        self, rng: np.random.Generator, batch_size: int, beta: float, n_items: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slots ``int64[B]`` (with replacement) and their importance weights ``float64[B]``."""
        total = self._tree.total()
        targets = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        slots = self._tree.find(targets)
        if not self.prioritized:
            return slots, np.ones(batch_size)
        weights = (n_items * (self._tree.get(slots) / total)) ** -beta
        return slots, weights / weights.max()

    def leaves(self, slots: np.ndarray | None = None) -> np.ndarray:
        """Leaves ``float64[K]`` of ``slots`` (all slots if None): each item's share of the total."""
        return self._tree.get(np.arange(self.capacity) if slots is None else slots)

    def load(self, leaves: np.ndarray, max_priority: float) -> None:
        """Replace every leaf and the running max (checked by the caller)."""
        tree = SumTree(self.capacity)
        tree.update(np.arange(self.capacity), leaves)
        self._tree, self.max_priority = tree, float(max_priority)
