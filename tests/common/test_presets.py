"""--preset: one paper's table fills every 'auto' value; flags typed by hand still win."""

import dataclasses

import pytest

from common.config import (
    PRESETS,
    Config,
    ConfigError,
    RunConfig,
    build_arg_parser,
    config_from_args,
    explicit_overrides,
    resolve,
)


def parse(*argv):
    return config_from_args(build_arg_parser().parse_args(list(argv)))


def flat(cfg: Config) -> dict:
    return {f"{s}.{k}": v for s, fields in cfg.to_dict().items() for k, v in fields.items()}


# Today's resolved values for the fields the presets fill: the apex preset must keep them.
APEX_ATARI_GPU = {
    "actors.epsilon_schedule": "apex",
    "actors.epsilon_final": 0.01,
    "actors.epsilon_decay_agent_steps": 250_000,
    "replay.n_step": 3,
    "replay.prioritized": True,
    "replay.replay_capacity": 1_000_000,
    "replay.learning_starts": 50_000,
    "replay.replay_ratio": 0.0,
    "learner.double_q": True,
    "learner.dueling": True,
    "learner.loss": "huber",
    "learner.optimizer": "adam",
    "learner.lr": 1e-4,
    "learner.adam_eps": 1.5e-4,
    "learner.grad_clip": 40.0,
    "learner.batch_size": 512,
    "learner.target_update_period": 2_500,
}
APEX_VECTOR_CPU = {
    **APEX_ATARI_GPU,
    "replay.replay_capacity": 100_000,
    "replay.learning_starts": 1_000,
    "replay.replay_ratio": 8.0,
    "learner.lr": 5e-4,
    "learner.batch_size": 64,
    "learner.target_update_period": 200,
}
# Mnih et al. 2015, Extended Data Table 1 (and its Methods), for Atari.
NATURE_ATARI = {
    "actors.epsilon_schedule": "linear",
    "actors.epsilon_final": 0.1,
    "actors.epsilon_decay_agent_steps": 1_000_000,
    "replay.n_step": 1,
    "replay.prioritized": False,
    "replay.replay_capacity": 1_000_000,
    "replay.learning_starts": 50_000,
    "replay.replay_ratio": 8.0,  # a batch of 32 every 4 agent steps
    "learner.double_q": False,
    "learner.dueling": False,
    "learner.loss": "huber",
    "learner.optimizer": "rmsprop",
    "learner.lr": 0.00025,
    "learner.rmsprop_decay": 0.95,
    "learner.rmsprop_eps": 0.01 / 32**2,  # its 0.01 for a summed loss "learner.grad_clip": 0.0,
    "learner.batch_size": 32,
    "learner.target_update_period": 10_000,
    "learner.gamma": 0.99,
    "env.noop_max": 30,
}


@pytest.mark.parametrize(
    "argv,atari,cuda,expected",
    [
        ((), True, True, APEX_ATARI_GPU),
        (("--preset", "apex"), False, False, APEX_VECTOR_CPU),
        (("--preset", "nature"), True, True, NATURE_ATARI),
        (("--preset", "nature"), True, False, NATURE_ATARI),
    ],
)
def test_preset_tables(argv, atari, cuda, expected):
    got = flat(resolve(parse(*argv), atari=atari, cuda=cuda))
    assert {k: got[k] for k in expected} == expected
    assert got["run.preset"] == (argv[1] if argv else "apex")


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("atari", [True, False])
def test_every_preset_fills_every_auto_value_of_the_algorithm(preset, atari):
    got = resolve(Config(run=RunConfig(preset=preset)), atari=atari, cuda=False)
    for section in ("actors", "replay", "learner", "eval"):
        for name, value in dataclasses.asdict(getattr(got, section)).items():
            assert value is not None, f"{preset}: {section}.{name} left auto"
    assert set(PRESETS[preset]) == {"actors", "replay", "learner", "eval"}
    assert {s: set(f) for s, f in PRESETS[preset].items()} == {s: set(f) for s, f in PRESETS["apex"].items()}


def test_typed_flags_win_over_the_preset():
    cfg = resolve(
        parse(
            "--preset",
            "nature",
            "--n-step",
            "3",
            "--dueling",
            "on",
            "--lr",
            "1e-3",
            "--target-update-period",
            "7",
            "--learning-starts",
            "64",
            "--replay-capacity",
            "100",
        ),
        atari=True,
        cuda=False,
    )
    assert cfg.replay.n_step == 3 and cfg.learner.dueling is True and cfg.learner.lr == 1e-3
    assert cfg.learner.target_update_period == 7 and cfg.replay.learning_starts == 64
    assert cfg.learner.double_q is False and cfg.replay.prioritized is False  # the rest is still Nature's


def test_learning_rate_follows_the_chosen_optimizer():
    apex_rmsprop = resolve(parse("--optimizer", "rmsprop"), atari=True, cuda=True).learner
    assert apex_rmsprop.lr == pytest.approx(0.00025 / 4) and apex_rmsprop.rmsprop_eps == 1.5e-7  # Ape-X's
    nature_adam = resolve(parse("--preset", "nature", "--optimizer", "adam"), atari=True, cuda=True).learner
    assert nature_adam.lr == 1e-4 and nature_adam.optimizer == "adam"


def test_resolved_config_round_trips_with_its_preset():
    cfg = resolve(parse("--preset", "nature"), atari=False, cuda=False)
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg and again.run.preset == "nature"
    assert resolve(again, atari=False, cuda=False) == cfg  # nothing left to fill


def test_a_typed_preset_on_resume_refills_what_it_controls():
    saved = resolve(Config(), atari=True, cuda=False).to_dict()  # an apex run's config.json
    parser = build_arg_parser()
    argv = ["--resume", "r", "--preset", "nature", "--n-step", "5"]
    for section, values in explicit_overrides(parser, argv, parser.parse_args(argv)).items():
        saved[section].update(values)
    cfg = resolve(Config.from_dict(saved), atari=True, cuda=False)
    assert cfg.run.preset == "nature" and cfg.learner.dueling is False and cfg.learner.batch_size == 32
    assert cfg.replay.n_step == 5  # typed now
    # without --preset, the saved run's resolved values stay
    argv = ["--resume", "r", "--time-limit", "5"]
    assert explicit_overrides(parser, argv, parser.parse_args(argv)) == {"run": {"resume": "r", "time_limit": 5.0}}


def test_bad_values_name_the_flag():
    with pytest.raises(ConfigError, match="--preset=dqn"):
        RunConfig(preset="dqn")
    with pytest.raises(ConfigError, match="--rmsprop-eps=0"):
        parse("--rmsprop-eps", "0")
    with pytest.raises(ConfigError, match="--loss=l1"):
        dataclasses.replace(Config().learner, loss="l1")
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(["--optimizer", "sgd"])


def test_help_cites_the_papers_and_gives_each_presets_value():
    text = " ".join(build_arg_parser().format_help().split())  # without its line wrapping
    assert "Mnih et al. 2015" in text and "Horgan et al. 2018" in text
    for flag in ("--double-q", "--dueling", "--loss", "--optimizer", "--rmsprop-decay", "--rmsprop-eps", "--preset"):
        assert flag in text
    for action in build_arg_parser()._actions:
        if action.default is None and "." in action.dest:
            section, name = action.dest.split(".")
            if name in PRESETS["nature"].get(section, {}):
                assert "preset" in action.help, action.dest
