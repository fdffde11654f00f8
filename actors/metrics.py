"""An actor's own gauges, exported through ``ray.util.metrics`` (see learner/ray_metrics.py
for the driver's and for how Ray names them on export)."""

from __future__ import annotations

from ray.util.metrics import Gauge


class ActorMetrics:
    """Gauges of one actor: its throughput, weights version and recent score."""

    def __init__(self, actor_name: str):
        tags = {"actor": actor_name}
        self.agent_steps = Gauge(
            "raydqn_actor_agent_steps", description="agent steps of this actor", tag_keys=("actor",)
        )
        self.policy_version = Gauge(
            "raydqn_actor_policy_version", description="weights version this actor acts with", tag_keys=("actor",)
        )
        self.score = Gauge(
            "raydqn_actor_mean_return", description="mean raw score of this actor's recent games", tag_keys=("actor",)
        )
        for g in (self.agent_steps, self.policy_version, self.score):
            g.set_default_tags(tags)
