"""Our own metrics, exported through ``ray.util.metrics`` for the Ray dashboard and Prometheus.

Names are prefixed ``raydqn_``; Ray adds its own ``ray_`` prefix on export, so the
dashboard's metrics view and Grafana list them as ``ray_raydqn_...``.
"""

from __future__ import annotations

import math

from ray.util.metrics import Gauge

#: metrics.csv column -> (gauge name, description)
DRIVER_GAUGES = {
    "env_frames": ("raydqn_env_frames", "emulator frames so far (4 per agent step on Atari)"),
    "agent_steps_per_s": ("raydqn_agent_steps_per_s", "agent steps per second, all actors"),
    "env_frames_per_s": ("raydqn_env_frames_per_s", "emulator frames per second, all actors"),
    "updates_per_s": ("raydqn_updates_per_s", "learner updates per second"),
    "learner_steps": ("raydqn_learner_steps", "learner updates so far"),
    "policy_version": ("raydqn_policy_version", "version of the weights last published"),
    "replay_size": ("raydqn_replay_size", "records held in replay, all shards"),
    "replay_ratio": ("raydqn_replay_ratio", "transitions sampled per transition inserted so far"),
    "mean_return_100": ("raydqn_mean_return_100", "mean raw score of the last 100 games"),
    "eval_return": ("raydqn_eval_return", "mean raw score of the newest evaluation (fresh games at --eval-epsilon)"),
    "loss": ("raydqn_loss", "TD loss of the last update"),
    "mean_q": ("raydqn_mean_q", "mean Q of the last batch"),
    "policy_lag": ("raydqn_policy_lag", "versions the slowest actor is behind the learner"),
    "weight_sync_age_s": ("raydqn_weight_sync_age_s", "seconds since weights were last published"),
}


class DriverMetrics:
    """Gauges of the learner process, tagged with the run name."""

    def __init__(self, run: str):
        self.gauges = {}
        for column, (name, desc) in DRIVER_GAUGES.items():
            g = Gauge(name, description=desc, tag_keys=("run",))
            g.set_default_tags({"run": run})
            self.gauges[column] = g

    def update(self, row: dict) -> None:
        for column, gauge in self.gauges.items():
            value = row.get(column)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                gauge.set(float(value))
