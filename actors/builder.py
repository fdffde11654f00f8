"""How an actor is made from the run's config: its envs, network, seeds and ε. No Ray.

Randomness: one ``np.random.SeedSequence`` per actor, spawned from the run's seed and the
actor's index, gives independent seeds to its envs, its exploration and its network's
initialisation, so no two streams share a generator.

ε: Ape-X gives stream i of N a fixed ε; the linear schedule follows the whole run's agent
steps, which the learner sends with each weights publish, so neither a resumed run nor a
restarted actor starts exploring from 1.0 again.
"""

from __future__ import annotations

import numpy as np
import torch

from actors.acting import ActingNetwork, resolve_precision
from actors.actor import ActorCore
from common.config import Config
from common.envs import spec_of, vector_env_for
from common.networks import q_network_for
from common.schedules import apex_epsilons, linear_epsilon


def actor_seeds(run_seed: int, actor_index: int) -> dict[str, int]:
    """Independent seeds (envs, exploration, network) for one actor of a run."""
    children = np.random.SeedSequence(run_seed, spawn_key=(actor_index,)).spawn(3)
    # 31 bits: ALE takes a signed int seed, and env i of the actor uses seed + i.
    env, explore, net = (int(c.generate_state(1)[0] >> 2) for c in children)
    return {"env": env, "explore": explore, "network": net}


class StreamEpsilons:
    """ε float64[E] of one actor's E streams as a function of its steps per stream.

    Linear schedule: the run's agent steps are estimated as those at the last
    :meth:`anchor` (sent by the learner) plus this actor's steps per stream since then
    times the number of streams in the run (all streams step at about the same rate).
    """

    def __init__(self, cfg: Config, actor_index: int):
        a, per = cfg.actors, cfg.env.envs_per_actor
        self.per, self.total = per, a.num_actors * per
        self.linear = a.epsilon_schedule == "linear"
        self.decay, self.final = a.epsilon_decay_agent_steps, a.epsilon_final
        self.fixed = apex_epsilons(self.total, a.epsilon_base, a.epsilon_alpha)[
            actor_index * per : (actor_index + 1) * per
        ]
        self.run_steps_at_anchor, self.own_at_anchor = 0, 0

    def anchor(self, run_agent_steps: int, steps_per_stream: int) -> None:
        """The run had ``run_agent_steps`` when this actor had ``steps_per_stream``."""
        self.run_steps_at_anchor, self.own_at_anchor = int(run_agent_steps), int(steps_per_stream)

    def run_agent_steps(self, steps_per_stream: int) -> int:
        return self.run_steps_at_anchor + max(steps_per_stream - self.own_at_anchor, 0) * self.total

    def __call__(self, steps_per_stream: int) -> np.ndarray:
        if not self.linear:
            return self.fixed
        eps = linear_epsilon(
            self.run_agent_steps(steps_per_stream), self.decay, 1.0, self.final
        )  # from 1.0, both presets
        return np.full(self.per, eps)


def build_actor_core(cfg: Config, actor_index: int, record: bool = True) -> ActorCore:
    """Actor ``actor_index``'s envs and ε-greedy network (in ``--actor-precision``, made
    concrete for this CPU); its streams are numbered ``actor_index * E + j``."""
    per = cfg.env.envs_per_actor
    seeds = actor_seeds(cfg.run.seed, actor_index)
    env = vector_env_for(cfg.env, per, seeds["env"])
    torch.manual_seed(seeds["network"])
    precision, _ = resolve_precision(cfg.actors.actor_precision)
    network = ActingNetwork(q_network_for(spec_of(env, cfg.env.env_id), cfg.learner), precision)
    return ActorCore(
        env,
        network,
        StreamEpsilons(cfg, actor_index),
        stream_ids=[actor_index * per + j for j in range(per)],
        steps_per_batch=cfg.actors.steps_per_batch,
        frames_per_step=env.frames_per_step,
        clip_rewards=env.clip_rewards,
        seed=seeds["explore"],
        record=record,
        initial_priorities=cfg.actors.actor_priorities and cfg.replay.prioritized and record,
        n_step=cfg.replay.n_step,
        gamma=cfg.learner.gamma,
        kappa=cfg.learner.kappa,
    )
