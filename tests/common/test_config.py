import dataclasses

import pytest

from common.config import (
    ActorConfig,
    Config,
    ConfigError,
    LearnerConfig,
    ReplayConfig,
    build_arg_parser,
    config_from_args,
    resolve,
)


def parse(*argv):
    return config_from_args(build_arg_parser().parse_args(list(argv)))


def test_cli_names_map_to_fields():
    cfg = parse(
        "--env",
        "ALE/Pong-v5",
        "--num-actors",
        "3",
        "--envs-per-actor",
        "2",
        "--total-env-frames",
        "1000",
        "--time-limit",
        "9",
        "--run-dir",
        "x",
        "--seed",
        "5",
        "--address",
        "auto",
        "--batch-size",
        "32",
        "--prioritized",
        "false",
        "--learning-starts",
        "auto",
    )
    assert cfg.env.env_id == "ALE/Pong-v5" and cfg.actors.num_actors == 3 and cfg.env.envs_per_actor == 2
    assert cfg.run.total_env_frames == 1000 and cfg.run.time_limit == 9 and cfg.run.run_dir == "x"
    assert cfg.run.seed == 5 and cfg.run.address == "auto" and cfg.learner.batch_size == 32
    assert cfg.replay.prioritized is False and cfg.replay.learning_starts is None


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: ActorConfig(num_actors=0), "--num-actors=0"),
        (lambda: ReplayConfig(replay_capacity=-5), "--replay-capacity=-5"),
        (lambda: LearnerConfig(gamma=1.5), "--gamma=1.5"),
        (
            lambda: Config(learner=LearnerConfig(batch_size=512), replay=ReplayConfig(replay_capacity=100)),
            "--batch-size=512",
        ),
    ],
)
def test_impossible_values_name_field_and_value(make, needle):
    with pytest.raises(ConfigError, match=needle):
        make()


def test_resolve_fills_auto_values_by_env_kind_and_device():
    atari_gpu = resolve(Config(), atari=True, cuda=True)
    assert atari_gpu.learner.batch_size == 512 and atari_gpu.replay.replay_capacity == 1_000_000
    vec_cpu = resolve(Config(), atari=False, cuda=False)
    assert vec_cpu.learner.batch_size == 64 and vec_cpu.replay.learning_starts == 1000
    mine = resolve(Config(learner=LearnerConfig(batch_size=7)), atari=True, cuda=True)
    assert mine.learner.batch_size == 7
    with pytest.raises(ConfigError, match="batch-size"):
        resolve(
            Config(learner=LearnerConfig(batch_size=100), replay=ReplayConfig(replay_capacity=50)),
            atari=True,
            cuda=False,
        )


def test_dict_round_trip_and_unknown_fields():
    cfg = dataclasses.replace(Config(), actors=ActorConfig(num_actors=4))
    assert Config.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    d["actors"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        Config.from_dict(d)
