"""The Atari protocol flags reach the ALE: sticky actions and the full action set, from the
config through the actors' and the evaluator's envs; their defaults and round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from actors.builder import build_actor_core
from common.config import Config, ConfigError, EnvConfig, build_arg_parser, config_from_args, resolve
from common.envs import AleVectorEnv, describe_env, make_vector_env
from learner.evaluate import DEFAULT_EVAL_EPSILON, checkpoint_epsilon

BREAKOUT, PONG = "ALE/Breakout-v5", "ALE/Pong-v5"
RIGHT = 2  # Breakout's minimal set: NOOP, FIRE, RIGHT, LEFT


def _sticky(env: AleVectorEnv) -> list[float]:
    return [ale.getFloat("repeat_action_probability") for ale in env._ales]


def test_defaults_are_nature_dqns_protocol():
    """No sticky actions (ale-py's own default for ALE/*-v5 is 0.25) and the minimal set."""
    with make_vector_env(BREAKOUT, 2, 0) as env:
        assert _sticky(env) == [0.0, 0.0]
        assert env.num_actions == 4


@pytest.mark.parametrize("p", [0.25, 1.0])
def test_sticky_probability_reaches_the_ale(p):
    with make_vector_env(BREAKOUT, 2, 0, repeat_action_probability=p) as env:
        assert _sticky(env) == [p, p]


@pytest.mark.parametrize("env_id, minimal", [(BREAKOUT, 4), (PONG, 6)])
def test_full_action_space_gives_all_18(env_id, minimal):
    assert describe_env(env_id).num_actions == minimal
    assert describe_env(env_id, full_action_space=True).num_actions == 18
    with make_vector_env(env_id, 1, 0, full_action_space=True) as full, make_vector_env(env_id, 1, 0) as small:
        # Same FIRE rule either way: it is the game's, not the action set's.
        assert full.fire_on_start == small.fire_on_start
        full.reset()
        full.step(np.array([17]))  # DOWNLEFTFIRE: only the full set has it


def _frames(p: float, action: int, steps: int = 25) -> np.ndarray:
    with make_vector_env(BREAKOUT, 1, 3, repeat_action_probability=p, noop_max=0) as env:
        env.reset()
        return np.stack([env.step(np.array([action])).frames[0] for _ in range(steps)])


def test_sticky_one_repeats_the_first_action_forever():
    """At 1.0 the emulator always plays the previous action, NOOP after the reset: pressing
    RIGHT moves nothing, so the frames are those of doing nothing. At 0 the paddle moves."""
    np.testing.assert_array_equal(_frames(1.0, RIGHT), _frames(1.0, 0))
    assert not np.array_equal(_frames(0.0, RIGHT), _frames(0.0, 0))


def test_actors_build_their_envs_with_the_protocol():
    cfg = resolve(
        Config(
            env=EnvConfig(env_id=BREAKOUT, envs_per_actor=2, repeat_action_probability=0.25, full_action_space=True)
        ),
        atari=True,
        cuda=False,
    )
    core = build_actor_core(cfg, 0, record=False)
    try:
        assert _sticky(core.env) == [0.25, 0.25]
        assert core.env.num_actions == 18
    finally:
        core.env.close()


def _parse(*argv: str) -> Config:
    return config_from_args(build_arg_parser().parse_args(list(argv)))


def test_flags_round_trip_through_config_json():
    cfg = _parse("--repeat-action-probability", "0.25", "--full-action-space", "on")
    assert (cfg.env.repeat_action_probability, cfg.env.full_action_space) == (0.25, True)
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert _parse().env.repeat_action_probability is None and _parse().env.full_action_space is False


@pytest.mark.parametrize(
    "env_id, atari, expected", [(BREAKOUT, True, 0.0), ("MinAtar/Breakout-v1", False, 0.1), ("CartPole-v1", False, 0.0)]
)
def test_resolve_records_the_familys_sticky_probability(env_id, atari, expected):
    cfg = resolve(Config(env=EnvConfig(env_id=env_id)), atari=atari, cuda=False)
    assert cfg.env.repeat_action_probability == expected
    typed = resolve(Config(env=EnvConfig(env_id=env_id, repeat_action_probability=0.25)), atari=atari, cuda=False)
    assert typed.env.repeat_action_probability == 0.25


def test_bad_sticky_probability_names_the_flag():
    with pytest.raises(ConfigError, match="--repeat-action-probability=1.5"):
        EnvConfig(repeat_action_probability=1.5)


def test_old_configs_load_with_the_protocol_defaults():
    """A config.json from before the flags: the fields come back as auto and off."""
    d = Config().to_dict()
    del d["env"]["repeat_action_probability"], d["env"]["full_action_space"]
    cfg = Config.from_dict(d)
    assert cfg.env.repeat_action_probability is None and cfg.env.full_action_space is False


def test_evaluate_defaults_to_the_runs_eval_epsilon():
    assert checkpoint_epsilon(Config()) == DEFAULT_EVAL_EPSILON == 0.001  # auto, or an old checkpoint
    nature = resolve(_parse("--preset", "nature"), atari=True, cuda=False)
    assert checkpoint_epsilon(nature) == 0.05
    assert (
        checkpoint_epsilon(dataclasses.replace(nature, eval=dataclasses.replace(nature.eval, eval_epsilon=0.0))) == 0.0
    )


@pytest.mark.parametrize("cuda, ratio", [(True, 0.0), (False, 1.0)])
def test_a_cpu_learner_is_fed_by_a_replay_ratio(cuda, ratio):
    """Free-running actors (Ape-X's setting, for a GPU) starve a CPU learner: on a CPU the
    apex preset holds Atari actors to 1 sample per transition; flags still win."""
    assert resolve(Config(), atari=True, cuda=cuda).replay.replay_ratio == ratio
    assert resolve(_parse("--replay-ratio", "0"), atari=True, cuda=False).replay.replay_ratio == 0.0
