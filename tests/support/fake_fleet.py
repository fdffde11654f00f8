"""A fleet without Ray: one in-process actor core and one in-process replay server.

It implements :class:`learner.fleet_protocol.TrainerFleet`, what :class:`learner.trainer.Trainer`
uses of :class:`learner.fleet.Fleet` (``tests/learner/test_fleet_protocol.py`` checks both),
and records every call, so the loop's stop conditions and cadences can be checked exactly.
"""

from __future__ import annotations

import time

import numpy as np

from actors.builder import build_actor_core
from common.messages import encode_step_batch
from learner.fleet_protocol import FleetPoll
from learner.shards import shard_settings
from replay_server.remote import ReplayServer


class FakeFleet:
    def __init__(self, cfg, spec, steps_per_poll: int = 16):
        self.cfg, self.spec = cfg, spec
        self.steps_per_poll = steps_per_poll
        self.core = None
        self.server = None
        self.published: list[tuple[int, int]] = []  # (policy_version, run agent steps)
        self.snapshots: list[bool] = []  # the wait flag of each save_snapshots call
        self.samples = self.empty_samples = 0
        self.priority_updates = 0
        self.alive = True
        self.stopped = False
        self.last_snapshot = time.monotonic()
        self.actor_restarts = self.replay_restarts = self.replay_records_lost = 0
        self.feed_stalled_s = 0.0
        self.weights, self.policy_version = None, 0
        self.eval_requests: list[dict] = []  # the run counters of each evaluation asked for
        self.finished_evals: list[dict] = []
        self.evaluated = None  # the weights of the newest evaluation
        self.evaluated_log: list[tuple[int, dict]] = []  # (policy version, weights) of each evaluation

    def start(self, weights: dict, policy_version: int, agent_steps: int = 0) -> None:
        # The whole replay in one shard, with a shard's settings.
        self.server = ReplayServer(**shard_settings(self.cfg, self.spec.stack_size, shard=0, shards=1))
        self.core = build_actor_core(self.cfg, 0)
        self.publish(weights, policy_version, agent_steps)

    @property
    def started(self) -> bool:
        return self.server is not None

    def poll(self) -> FleetPoll:
        """Steps the actor ``steps_per_poll`` times (while it is 'alive'), then reports."""
        for _ in range(self.steps_per_poll if self.alive else 0):
            for batch in self.core.step():
                self.server.add(encode_step_batch(batch))
        stats = {
            "actor": 0,
            "agent_steps": self.core.agent_steps,
            "env_frames": self.core.env_frames,
            "policy_version": self.core.policy_version,
            "episodes": [e.__dict__ for e in self.core.drain_episodes()],
        }
        evals, self.finished_evals = self.finished_evals, []
        return FleetPoll([stats], self.server.stats(), int(self.alive), 0, evals)

    def request_eval(self, run_counters: dict, index: int) -> bool:
        """Plays the evaluation in-process at once; its result comes with the next poll."""
        from learner.evaluator import Evaluator

        self.eval_requests.append(dict(run_counters))
        self.evaluated = self.weights
        self.evaluated_log.append((self.policy_version, self.weights))
        self.finished_evals.append(
            Evaluator(self.cfg, num_envs=2).evaluate(self.weights, self.policy_version, run_counters, index)
        )
        return True

    def next_batch(self, batch_size: int, beta: float):
        batch = self.server.sample(batch_size, beta)
        if batch is None:
            self.empty_samples += 1
            return None
        self.samples += 1
        return 0, batch

    def update_priorities(self, shard: int, ids, priorities) -> None:
        self.priority_updates += 1
        self.server.update_priorities(ids, priorities)

    def evaluated_weights(self) -> dict:
        return self.evaluated

    def publish(self, weights: dict, policy_version: int, agent_steps: int) -> None:
        # A copy, as ray.put makes: a CPU learner's numpy weights share its parameters' memory.
        weights = {k: np.array(v) for k, v in weights.items()}
        self.core.set_weights(weights, policy_version)
        self.weights, self.policy_version = weights, policy_version
        self.published.append((policy_version, agent_steps))

    def save_snapshots(self, wait: bool) -> None:
        self.snapshots.append(wait)
        self.last_snapshot = time.monotonic()

    def stop(self):
        self.stopped = True
        return None

    def shutdown(self) -> None:
        pass
