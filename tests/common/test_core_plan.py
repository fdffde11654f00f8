"""The core plan: the learner, the actors, the shards and the evaluator on the cores Ray sees."""

import pytest

from common.config import ActorConfig, Config, EnvConfig, ReplayConfig, RunConfig, core_plan, resolve
from common.config.hardware import DEFAULT_ENVS_PER_ACTOR, GPU_DRIVER_CORES, plan_cores


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("cores", [2, 8, 16, 64])
def test_the_actors_the_plan_fits_oversubscribe_nothing(cores, cuda):
    fit = plan_cores(cores, cuda, num_actors=1, evaluator=True).actors_fit
    plan = plan_cores(cores, cuda, num_actors=fit, evaluator=True)
    assert plan.oversubscribed == 0 and plan.busy <= cores
    assert plan.actors == fit >= 1 and plan.shards >= 1
    assert plan.envs_per_actor == DEFAULT_ENVS_PER_ACTOR and not plan.envs_sized
    if cuda and cores >= 4:  # the update's and the feeder's threads keep a core each
        assert plan.learner == GPU_DRIVER_CORES and plan.shards_busy
        assert plan.worker_niceness > 0  # below the learner's
    one_more = plan_cores(cores, cuda, num_actors=fit + 1, evaluator=True, shards=plan.shards)
    assert one_more.oversubscribed >= 1 and f"--num-actors {one_more.actors_fit}" in one_more.line()


def test_sixteen_cores_and_fourteen_actors_on_a_gpu_get_one_shard_and_a_warning():
    # Before the plan: 4 shards, 18 one-CPU workers plus the learner and feeder on 16 cores.
    plan = plan_cores(16, True, num_actors=14, evaluator=True)
    assert plan.shards == 1 and plan.learner == 2
    assert plan.oversubscribed == 1 and plan.actors_fit == 13 and plan.worker_niceness == 0
    assert "time-shared (--num-actors 13 fits)" in plan.line()
    assert plan_cores(16, True, num_actors=10, evaluator=True).shards == 4  # what the actors leave


def test_a_cpu_learner_takes_the_cores_the_workers_leave():
    plan = plan_cores(8, False, num_actors=2, evaluator=True)
    assert (plan.learner, plan.shards, plan.oversubscribed) == (4, 1, 0)  # 8 - 2 actors - shard - evaluator
    assert plan_cores(8, False, num_actors=2, evaluator=True, learner_threads=3).learner == 3
    assert plan.worker_niceness == 0  # niced actors starve on cores shared with the learner


def test_more_actors_than_cores_size_the_envs_when_left_auto():
    plan = plan_cores(2, False, num_actors=16, evaluator=True)
    assert plan.envs_sized and plan.envs_per_actor * 16 <= DEFAULT_ENVS_PER_ACTOR  # 32 emulators, not 512
    typed = plan_cores(2, False, num_actors=16, evaluator=True, envs_per_actor=32)
    assert not typed.envs_sized and typed.envs_per_actor == 32
    assert plan_cores(2, False, num_actors=2, evaluator=True).envs_per_actor == DEFAULT_ENVS_PER_ACTOR


def test_resolve_takes_the_shards_and_envs_from_the_plan():
    readme = Config(actors=ActorConfig(num_actors=16))  # python -m learner.main --num-actors 16
    assert readme.env.envs_per_actor is None  # auto
    laptop = resolve(readme, atari=True, cuda=False, cores=2)
    assert laptop.env.envs_per_actor == 2 and laptop.replay.replay_shards == 1
    assert resolve(readme, atari=True, cuda=False).env.envs_per_actor == DEFAULT_ENVS_PER_ACTOR  # cores unknown
    typed = Config(env=EnvConfig(envs_per_actor=8), actors=ActorConfig(num_actors=16))
    assert resolve(typed, atari=True, cuda=False, cores=2).env.envs_per_actor == 8
    gpu = Config(actors=ActorConfig(num_actors=14), replay=ReplayConfig(replay_shards=None))
    assert resolve(gpu, atari=True, cuda=True, cores=16).replay.replay_shards == 1
    assert core_plan(resolve(readme, atari=True, cuda=False, cores=2), False, 2, auto_envs=True).envs_sized


def test_the_plan_counts_the_cpus_ray_is_given_and_no_actors_on_a_cluster():
    cfg = resolve(Config(run=RunConfig(num_cpus=4)), atari=True, cuda=False, cores=64)
    assert core_plan(cfg, False, 64).cores == 4
    cluster = resolve(Config(run=RunConfig(address="auto")), atari=True, cuda=True, cores=16)
    assert core_plan(cluster, True, 16).actors == 0


def test_the_plan_is_recorded_with_the_run():
    plan = plan_cores(16, True, num_actors=10, evaluator=True)
    record = plan.to_dict()
    assert record["cores"] == 16 and record["shards"] == 4 and record["oversubscribed"] == 0
