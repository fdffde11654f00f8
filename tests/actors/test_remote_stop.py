"""A clean stop loses nothing: the actor flushes the records its streams hold (real Ray)."""

import time

import pytest

from common.config import ActorConfig, Config, EnvConfig, resolve

pytestmark = pytest.mark.ray


def test_a_clean_stop_sends_every_record_the_actor_held():
    import ray

    from actors.remote import make_actor_class
    from replay_server.remote import make_replay_actor

    cfg = resolve(
        Config(
            env=EnvConfig(env_id="CartPole-v1", envs_per_actor=4), actors=ActorConfig(num_actors=1, steps_per_batch=64)
        ),
        atari=False,
        cuda=False,
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", namespace="stop-test")
    try:
        replay = make_replay_actor(num_cpus=0).remote(capacity=100_000, stack_size=1, n_step=3, gamma=0.99)
        actor = make_actor_class(num_cpus=0).remote(cfg.to_dict(), 0, replay)
        done = actor.run.remote()
        deadline = time.monotonic() + 60
        while ray.get(actor.stats.remote())["agent_steps"] < 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        actor.stop.remote()
        steps = ray.get(done, timeout=60)
        stats = ray.get(replay.stats.remote())
        # Every agent step of every stream became a transition in the replay: with 4
        # streams and 64 records per message, up to 4 x 64 + n records were held back.
        assert steps >= 500
        assert stats["transitions_inserted"] == steps
    finally:
        ray.shutdown()
