"""The Ray shell around :class:`actors.actor.ActorCore`.

A threaded actor (``max_concurrency=2``): ``run()`` steps the envs in one thread until
``stop()``; ``set_weights()`` and ``stats()`` are served in the other, so new weights are
handed over without ever blocking the env loop (it swaps them in between steps).
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import ray
import torch

from actors.acting import resolve_precision
from actors.builder import build_actor_core
from actors.metrics import ActorMetrics
from common.affinity import pin_worker_from_env
from common.config import Config
from common.messages import encode_step_batch

log = logging.getLogger(__name__)
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.005, 0.05  # polling the replay while the rate limiter holds


class ActorShell:
    def __init__(self, config: dict, actor_index: int, replay):
        pin_worker_from_env()  # --pin-cpus on: off the learner's cores (common.affinity)
        self.cfg = Config.from_dict(config)
        torch.set_num_threads(self.cfg.actors.actor_threads)
        self.index = actor_index
        # The shard's name (learner.fleet passes names, not handles), or a handle.
        self.replay = ray.get_actor(replay) if isinstance(replay, str) else replay
        self.core = build_actor_core(self.cfg, actor_index)
        _, why = resolve_precision(self.cfg.actors.actor_precision)
        self.precision = self.core.acting.precision
        # The driver prints one line for all actors (learner.fleet), not one each.
        self.description = f"{self.core.acting.describe()} [{why}]"
        self._weights = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.batches_sent = 0
        self.metrics = ActorMetrics(f"actor-{actor_index}")
        self.recent_scores: list[float] = []

    def run(self) -> int:
        """Step until stop(); returns the agent steps taken. Sends batches with back-pressure."""
        inflight: list = []
        limit = self.cfg.actors.max_inflight_batches
        limited = bool(self.cfg.replay.replay_ratio)
        allowance = 0.0
        backoff = MIN_BACKOFF_S
        while not self._stop.is_set():
            with self._lock:
                pending, self._weights = self._weights, None
            if pending is not None:
                self.core.set_weights(*pending)
            if limited and allowance <= 0:
                # The replay ratio is met: stop stepping (freeing the CPU) until the learner
                # has sampled enough. Each actor takes its share of the global allowance.
                try:
                    allowance = ray.get(self.replay.insert_allowance.remote()) / self.cfg.actors.num_actors
                except ray.exceptions.RayActorError:  # the replay is restarting: wait for it
                    self._stop.wait(0.5)
                    continue
                if allowance <= 0:
                    # Send what is held first: the learner may be waiting for exactly these.
                    inflight += self._send(self.core.flush())
                    # Back off while held: each poll is a round trip that wakes the replay
                    # and preempts the learner's threads on shared cores.
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                backoff = MIN_BACKOFF_S
            inflight += self._send(self.core.step())
            allowance -= self.core.env.num_envs
            if len(inflight) > limit:
                # Wait for the oldest messages only: the replay sets the pace, queues stay bounded.
                _, inflight = ray.wait(inflight, num_returns=len(inflight) - limit)
        # A clean stop sends what the streams still hold, and waits for the replay to take it.
        inflight += self._send(self.core.flush())
        try:
            ray.wait(inflight, num_returns=len(inflight), timeout=10)
        except ray.exceptions.RayActorError:
            pass
        return self.core.agent_steps

    def _send(self, batches) -> list:
        refs = [self.replay.add.remote(encode_step_batch(b)) for b in batches]
        self.batches_sent += len(refs)
        return refs

    def set_weights(self, weights: dict, version: int, run_agent_steps: int | None = None) -> None:
        """Called with the learner's one ray.put of the weights; resolved in this thread.
        ``run_agent_steps``: the whole run's agent steps when the weights were published."""
        with self._lock:
            self._weights = (weights, version)
            if run_agent_steps is not None:
                self.core.epsilons.anchor(run_agent_steps, self.core.steps_per_stream)

    def describe(self) -> str:
        """The acting network: its precision, what was converted, and why."""
        return self.description

    def stats(self) -> dict:
        episodes = [e.__dict__ for e in self.core.drain_episodes()]
        self.recent_scores = (self.recent_scores + [e["score"] for e in episodes])[-100:]
        self.metrics.agent_steps.set(self.core.agent_steps)
        self.metrics.policy_version.set(self.core.policy_version)
        if self.recent_scores:
            self.metrics.score.set(float(np.mean(self.recent_scores)))
        return {
            "actor": self.index,
            "agent_steps": self.core.agent_steps,
            "env_frames": self.core.env_frames,
            "policy_version": self.core.policy_version,
            "precision": self.precision,
            "batches_sent": self.batches_sent,
            "episodes": episodes,
        }

    def stop(self) -> None:
        self._stop.set()


def make_actor_class(num_cpus: float = 1.0):
    # No task events: each actor sends many small calls a second (see learner/fleet.py).
    return ray.remote(num_cpus=num_cpus, max_concurrency=2, max_restarts=3, enable_task_events=False)(ActorShell)


def actors_summary(descriptions: list[str]) -> str:
    """One line for the actors' acting networks: each distinct description with its count."""
    counts: dict[str, int] = {}
    for d in descriptions:
        counts[d] = counts.get(d, 0) + 1
    parts = [f"{n} x {d}" if len(counts) > 1 else d for d, n in counts.items()]
    return f"actors: {len(descriptions)} acting with " + "; ".join(parts)
