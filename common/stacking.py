"""Frame stacks kept by the actor, with exactly the rule the replay uses to rebuild them.

A stack holds the last ``stack_size`` frames of the current episode segment, oldest
first. At a segment start the missing older frames repeat the first frame, so the stack
the actor acts on is bit-for-bit the stack the learner later trains on.
"""

from __future__ import annotations

import numpy as np


class FrameStacker:
    """Stacks for E env streams: ``stacks`` is ``dtype[E, stack_size, *frame_shape]``."""

    def __init__(self, num_envs: int, stack_size: int, frame_shape: tuple[int, ...], dtype):
        self.stacks = np.zeros((num_envs, stack_size, *frame_shape), dtype=dtype)

    def start(self, frames: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Begin a new segment with ``frames[E, ...]`` for the envs in ``mask`` (all if None)."""
        if mask is None:
            self.stacks[:] = frames[:, None]
        else:
            self.stacks[mask] = frames[mask][:, None]

    def push(self, frames: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Append ``frames[E, ...]`` as the newest frame of the envs in ``mask`` (all if None)."""
        if mask is None:
            self.stacks[:, :-1] = self.stacks[:, 1:]
            self.stacks[:, -1] = frames
        else:
            idx = np.flatnonzero(mask)
            self.stacks[idx, :-1] = self.stacks[idx, 1:]
            self.stacks[idx, -1] = frames[idx]
