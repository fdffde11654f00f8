"""The Ray shell around one ReplayBuffer: decode, forward, count; no replay logic here.

``ReplayServer`` is a plain class (tests call it directly); ``make_replay_actor`` makes
the Ray actor class from it at the use site, e.g.::

    server = make_replay_actor(num_cpus=2).remote(capacity=1_000_000, stack_size=4, n_step=3, gamma=0.99)
"""

from __future__ import annotations

import logging

import numpy as np

from common.messages import MessageError, SampleBatch, decode_step_batch
from replay_server.buffer import ReplayBuffer

logger = logging.getLogger(__name__)


class ReplayServer:
    """Holds one ReplayBuffer; arguments are ReplayBuffer's."""

    def __init__(
        self,
        capacity: int,
        stack_size: int,
        n_step: int,
        gamma: float,
        prioritized: bool = True,
        alpha: float = 0.6,
        priority_eps: float = 1e-6,
        seed: int | None = None,
    ):
        self.buffer = ReplayBuffer(capacity, stack_size, n_step, gamma, prioritized, alpha, priority_eps, seed)
        self.rejected = 0
        self.batches_added = 0

    def add(self, data: bytes) -> bool:
        """Decode and store one encoded StepBatch. A bad batch is counted, logged and dropped:
        one broken actor must not take the replay (and every other actor's data) down."""
        try:
            self.buffer.add(decode_step_batch(data))
        except MessageError as e:
            self.rejected += 1
            logger.warning("rejected step batch: %s", e)
            return False
        self.batches_added += 1
        return True

    def sample(self, batch_size: int, beta: float = 0.4) -> SampleBatch | None:
        """A batch, or None while fewer than ``batch_size`` items are sampleable."""
        if self.buffer.num_sampleable < batch_size:
            return None
        return self.buffer.sample(batch_size, beta)

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> int:
        return self.buffer.update_priorities(ids, priorities)

    def stats(self) -> dict:
        return {**self.buffer.stats(), "rejected": self.rejected, "batches_added": self.batches_added}

    def ping(self) -> bool:
        return True


def make_replay_actor(**options):
    """The Ray actor class of ReplayServer with ``options`` (num_cpus, name, ...) applied."""
    import ray  # here, so that the plain class imports without Ray

    return ray.remote(ReplayServer).options(**options)
