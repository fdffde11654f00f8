"""What the trainer needs of a fleet, as a ``typing.Protocol``, and what a poll reports.

:class:`learner.trainer.Trainer` drives the fleet through these members only. Two classes
implement them: :class:`learner.fleet.Fleet` (Ray: actors, replay shards, evaluator) and
``tests/support/fake_fleet.py`` (one in-process actor and replay, to test the loop without
Ray); ``tests/learner/test_fleet_protocol.py`` checks both against :class:`TrainerFleet`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass
class FleetPoll:
    """What one poll saw. ``actor_stats``: each answering actor's cumulative stats (with
    the games it finished since the last poll); ``replay``: the shards' counters summed
    (and per shard under ``shards`` when there are several)."""

    actor_stats: list[dict]
    replay: dict
    actors_alive: int
    actors_restarting: int
    evals: list[dict] = dataclasses.field(default_factory=list)  # evaluations finished since the last poll


@runtime_checkable
class TrainerFleet(Protocol):
    last_snapshot: float  # time.monotonic() of the last snapshot request
    actor_restarts: int
    replay_restarts: int
    replay_records_lost: int

    @property
    def started(self) -> bool:
        """The parts are up (start ran far enough to need a stop)."""

    @property
    def feed_stalled_s(self) -> float:
        """Seconds without a batch while the trainer asks for one and the replay has
        items (0.0 while batches come, or while the rate limiter is the reason)."""

    def start(self, weights: dict, policy_version: int, agent_steps: int = 0) -> None: ...

    def next_batch(self, batch_size: int, beta: float) -> tuple[int, object] | None: ...

    def update_priorities(self, shard: int, ids: np.ndarray, priorities: np.ndarray) -> None: ...

    def publish(self, weights: dict, policy_version: int, agent_steps: int) -> None: ...

    def poll(self) -> FleetPoll: ...

    def request_eval(self, run_counters: dict, index: int) -> bool: ...

    def evaluated_weights(self) -> dict: ...

    def save_snapshots(self, wait: bool) -> None: ...

    def stop(self) -> FleetPoll | None: ...

    def shutdown(self) -> None: ...
