"""MinAtar (Young & Tian 2019) through the same envs, messages, replay and networks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("minatar")

from actors.builder import build_actor_core  # noqa: E402
from common.config import Config, EnvConfig, resolve  # noqa: E402
from common.envs import (  # noqa: E402
    MINATAR_GAMES,
    EnvSpecError,
    MinAtarVectorEnv,
    check_env_id,
    describe_env,
    is_atari,
    is_minatar,
    make_vector_env,
)
from common.messages import decode_step_batch, encode_step_batch  # noqa: E402
from common.networks import MinAtarCNN, build_q_network, q_network_for  # noqa: E402
from replay_server.buffer import ReplayBuffer  # noqa: E402

BREAKOUT = "MinAtar/Breakout-v1"
NOOP, LEFT, RIGHT = 0, 1, 2  # Breakout-v1's minimal set: n, l, r
PADDLE = 0  # Breakout's channels: paddle, ball, trail, brick
CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
MINIMAL = {"Asterix": 5, "Breakout": 3, "Freeway": 3, "Seaquest": 6, "SpaceInvaders": 4}


@pytest.mark.parametrize("game", sorted(MINATAR_GAMES))
def test_every_game_is_described(game):
    env_id = f"MinAtar/{game}-v1"
    assert is_minatar(env_id) and not is_atari(env_id)
    check_env_id(env_id)
    spec = describe_env(env_id)
    assert spec.frame_shape == (CHANNELS[game], 10, 10) and spec.frame_dtype == "uint8"
    assert (spec.stack_size, spec.frames_per_step, spec.codec, spec.clip_rewards, spec.atari) == (
        1,
        1,
        "lz4",
        False,
        False,
    )
    assert spec.num_actions == MINIMAL[game]
    assert describe_env(f"MinAtar/{game}-v0").num_actions == 6  # -v0: all six actions
    assert describe_env(env_id, full_action_space=True).num_actions == 6


@pytest.mark.parametrize("env_id", ["MinAtar/Pong-v1", "MinAtar/Breakout-v2", "MinAtar/breakout-v1", "MinAtar/"])
def test_unknown_minatar_ids_name_the_games(env_id):
    with pytest.raises(EnvSpecError, match="unknown environment") as e:
        check_env_id(env_id)
    assert "SpaceInvaders" in str(e.value) and "\n" not in str(e.value)


def test_missing_extra_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "minatar" else real(name, *a))
    with pytest.raises(EnvSpecError, match=r'needs the MinAtar extra: pip install -e "\.\[minatar\]"'):
        describe_env(BREAKOUT)


def test_frames_are_the_games_state_channels_first():
    with make_vector_env(BREAKOUT, 2, 0) as env:
        assert isinstance(env, MinAtarVectorEnv) and env.repeat_action_probability == 0.1  # the paper's
        frames = env.reset()
        assert frames.shape == (2, 4, 10, 10) and frames.dtype == np.uint8
        for i in range(2):
            np.testing.assert_array_equal(frames[i], env._games[i].state().transpose(2, 0, 1))
        assert frames[:, PADDLE].sum() == 2  # one paddle cell each


def _paddle_column(p: float, action: int) -> int:
    with make_vector_env(BREAKOUT, 1, 5, repeat_action_probability=p) as env:
        env.reset()
        for _ in range(3):
            out = env.step(np.array([action]))
        return int(np.argmax(out.frames[0, PADDLE].max(axis=0)))


def test_sticky_actions():
    """At 1.0 every action is the previous one, NOOP after the reset: the paddle stays."""
    start = _paddle_column(0.0, NOOP)
    assert _paddle_column(0.0, LEFT) == start - 3
    assert _paddle_column(1.0, LEFT) == start


def test_games_end_restart_and_are_seeded():
    def play(seed):
        with make_vector_env(BREAKOUT, 2, seed, repeat_action_probability=0.0) as env:
            env.reset()
            rng, log = np.random.default_rng(0), []
            for _ in range(300):
                out = env.step(rng.integers(0, 3, 2))
                log.append((out.frames.copy(), out.rewards.copy(), out.terminated.copy()))
                assert not out.truncated.any()
                np.testing.assert_array_equal(out.game_over, out.terminated)
                for i in np.flatnonzero(out.game_over):  # a fresh game: the full brick rows are back
                    assert out.restart_frames[i, 3].sum() == 30
            return log

    a, b = play(1), play(1)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert sum(x[2].sum() for x in a) > 0 and set(np.concatenate([x[1] for x in a])) <= {0.0, 1.0}


def test_truncation_after_max_episode_frames():
    with make_vector_env(BREAKOUT, 1, 0, max_episode_frames=4) as env:
        env.reset()
        flags = [env.step(np.array([NOOP])) for _ in range(4)]
        if not any(f.terminated[0] for f in flags):
            assert [bool(f.truncated[0]) for f in flags] == [False, False, False, True]


def test_network_is_the_papers():
    """Conv(16, 3x3, stride 1)-ReLU, Linear(1024, 128)-ReLU, Linear(128, A) with the plain head."""
    net = build_q_network((4, 10, 10), 1, 3, dueling=False)
    assert isinstance(net, MinAtarCNN)
    assert sum(p.numel() for p in net.parameters()) == (4 * 9 * 16 + 16) + (1024 * 128 + 128) + (128 * 3 + 3)
    obs = torch.randint(0, 2, (5, 1, 4, 10, 10), dtype=torch.uint8)
    assert net(obs).shape == (5, 3)
    assert build_q_network((10, 10, 10), 1, 6, dueling=True)(
        torch.zeros(2, 1, 10, 10, 10, dtype=torch.uint8)
    ).shape == (2, 6)
    with pytest.raises(ValueError, match="MinAtar CNN"):
        build_q_network((4, 12, 12), 1, 3)


def test_resolved_defaults_are_minatars():
    cfg = resolve(Config(env=EnvConfig(env_id=BREAKOUT)), atari=False, cuda=False)
    assert (cfg.replay.replay_capacity, cfg.replay.learning_starts, cfg.learner.target_update_period) == (
        100_000,
        5_000,
        1_000,
    )
    assert cfg.learner.lr == 2.5e-4 and cfg.env.repeat_action_probability == 0.1
    nature = resolve(
        Config(env=EnvConfig(env_id=BREAKOUT), run=Config().run.__class__(preset="nature")), atari=False, cuda=False
    )
    assert nature.actors.epsilon_decay_agent_steps == 100_000 and nature.learner.lr == 0.00025


def test_actor_messages_reach_the_replay_and_come_back_as_stacks():
    cfg = resolve(Config(env=EnvConfig(env_id=BREAKOUT, envs_per_actor=2)), atari=False, cuda=False)
    core = build_actor_core(cfg, 0)
    spec = describe_env(BREAKOUT)
    core.set_weights(q_network_for(spec, cfg.learner).state_dict(), 1)
    replay = ReplayBuffer(1000, spec.stack_size, cfg.replay.n_step, cfg.learner.gamma, seed=0)
    sent = 0
    while sent < 200:
        for batch in core.step():
            assert batch.frame_shape == (4, 10, 10) and batch.frame_dtype == "uint8" and batch.codec == "lz4"
            replay.add(decode_step_batch(encode_step_batch(batch)))
            sent += len(batch.frame_blobs)
    sample = replay.sample(16)
    assert sample.obs.shape == sample.next_obs.shape == (16, 1, 4, 10, 10) and sample.obs.dtype == np.uint8
    assert set(np.unique(sample.obs)) <= {0, 1}
    core.env.close()
