"""How an actor is made: independent seeds per stream, and an ε schedule that follows the
whole run (a resumed run or a restarted actor does not start exploring from 1.0 again)."""

import dataclasses

import numpy as np
import pytest

from actors.builder import StreamEpsilons, actor_seeds, build_actor_core
from common.config import ActorConfig, Config, EnvConfig, resolve


def linear_cfg(num_actors=2, per=4, decay=1_000):
    return Config(
        env=EnvConfig(env_id="CartPole-v1", envs_per_actor=per),
        actors=ActorConfig(
            num_actors=num_actors, epsilon_schedule="linear", epsilon_final=0.1, epsilon_decay_agent_steps=decay
        ),
    )


def test_linear_epsilon_follows_the_run_not_the_actor():
    eps = StreamEpsilons(linear_cfg(), actor_index=1)
    assert eps(0) == pytest.approx(np.full(4, 1.0))
    # 8 streams in the run: 50 steps per stream of this actor = 400 run steps.
    assert eps(50)[0] == pytest.approx(1.0 - 0.9 * 400 / 1_000)
    # A restarted actor counts its own steps from 0 again; the learner's publish carries
    # the run's 600 agent steps, so its ε continues from there.
    restarted = StreamEpsilons(linear_cfg(), actor_index=1)
    restarted.anchor(run_agent_steps=600, steps_per_stream=0)
    assert restarted(0)[0] == pytest.approx(1.0 - 0.9 * 0.6)
    assert restarted(25)[0] == pytest.approx(1.0 - 0.9 * (600 + 25 * 8) / 1_000)
    assert restarted(10_000)[0] == pytest.approx(0.1)


def test_apex_epsilons_are_fixed_per_stream():
    cfg = dataclasses.replace(linear_cfg(), actors=ActorConfig(num_actors=2))
    a0, a1 = StreamEpsilons(cfg, 0), StreamEpsilons(cfg, 1)
    a1.anchor(10**9, 0)
    both = np.concatenate([a0(5), a1(99)])
    assert both[0] == pytest.approx(0.4) and both[-1] == pytest.approx(0.4**8)
    assert np.all(np.diff(both) < 0)


def test_seeds_are_independent_per_actor_and_purpose():
    seeds = [actor_seeds(0, i) for i in range(4)] + [actor_seeds(1, 0)]
    values = [v for s in seeds for v in s.values()]
    assert len(set(values)) == len(values)
    assert all(0 <= v < 2**30 for v in values)
    assert actor_seeds(0, 2) == actor_seeds(0, 2)


def test_exploration_and_env_noops_do_not_share_a_generator():
    core = build_actor_core(resolve(linear_cfg(num_actors=1, per=2), atari=False, cuda=False), 0)
    try:
        seeds = actor_seeds(0, 0)
        assert core.rng.bit_generator.state != np.random.default_rng(seeds["env"]).bit_generator.state
        assert core.rng.bit_generator.state == np.random.default_rng(seeds["explore"]).bit_generator.state
    finally:
        core.env.close()
