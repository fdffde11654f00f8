"""common.envs on real ALE games (Breakout, Pong) and CartPole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import pytest

from common import envs
from common.envs import (
    AleVectorEnv,
    EnvSpecError,
    EnvStep,
    GymVectorEnv,
    check_env_id,
    is_atari,
    make_vector_env,
)

BREAKOUT, PONG, CARTPOLE = "ALE/Breakout-v5", "ALE/Pong-v5", "CartPole-v1"
NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3  # Breakout's minimal action set
HEADER_ROWS = slice(0, 7)  # Breakout's score and lives digits in the 84x84 frame

ROOT = Path(__file__).resolve().parents[2]

gym.register_envs(ale_py)


def _step(env, *actions) -> EnvStep:
    return env.step(np.asarray(actions, dtype=np.int64))


def _check_step(out: EnvStep, env) -> None:
    n = env.num_envs
    assert out.frames.shape == out.restart_frames.shape == (n, *env.frame_shape)
    assert out.frames.dtype == out.restart_frames.dtype == env.frame_dtype
    assert out.rewards.dtype == np.float32 and out.rewards.shape == (n,)
    for flags in (out.terminated, out.truncated, out.game_over):
        assert flags.dtype == bool and flags.shape == (n,)
    assert not (out.terminated & out.truncated).any()
    assert not (out.truncated & ~out.game_over).any()
    going_on = ~(out.terminated | out.truncated)
    np.testing.assert_array_equal(out.restart_frames[going_on], out.frames[going_on])


# --------------------------------------------------------------------------- the package


def test_every_exported_name_resolves_and_the_protocol_loads_nothing():
    """``from common.envs import X`` works for every exported name, and the protocol's numbers
    can be read without numpy, OpenCV or the emulators (the configuration reads them)."""
    code = (
        "import sys; import common.envs.protocol as p; "
        "assert p.ATARI_MAX_EPISODE_FRAMES == 108_000 and p.ATARI_NOOP_MAX == 30, vars(p); "
        "heavy = sorted({'numpy', 'cv2', 'ale_py', 'gymnasium'} & set(sys.modules)); "
        "assert not heavy, heavy; "
        "import common.envs as e; missing = [n for n in e.__all__ if getattr(e, n, None) is None]; "
        "assert not missing, missing; assert 'make_vector_env' in dir(e)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        envs.no_such_name  # noqa: B018


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("env_id", [BREAKOUT, PONG, "ALE/MsPacman-v5", "BreakoutNoFrameskip-v4", "ALE/NoSuchGame-v5"])
def test_is_atari(env_id):
    assert is_atari(env_id)


@pytest.mark.parametrize("env_id", [CARTPOLE, "Foo-v0", "FrozenLake-v1"])
def test_is_not_atari(env_id):
    assert not is_atari(env_id)


@pytest.mark.parametrize("env_id", [BREAKOUT, PONG, CARTPOLE, "Acrobot-v1"])
def test_known_ids_pass(env_id):
    check_env_id(env_id)


@pytest.mark.parametrize("env_id", ["ALE/NoSuchGame-v5", "Foo-v0", "ALE/Breakout-v99"])
def test_unknown_ids_rejected(env_id):
    with pytest.raises(EnvSpecError, match="unknown environment") as e:
        check_env_id(env_id)
    assert env_id in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(EnvSpecError):
        make_vector_env(env_id, 1, 0)


@pytest.mark.parametrize(
    "env_id, problem",
    [
        ("FrozenLake-v1", "observation space"),  # Discrete observations
        ("Blackjack-v1", "observation space"),  # Tuple observations
        ("Pendulum-v1", "action space"),  # continuous actions
    ],
)
def test_unsupported_envs_rejected(env_id, problem):
    with pytest.raises(EnvSpecError, match=problem) as e:
        check_env_id(env_id)
    assert env_id in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- shapes


def test_breakout_shapes_and_defaults():
    with make_vector_env(BREAKOUT, 3, 0) as env:
        assert isinstance(env, AleVectorEnv)
        assert (env.num_envs, env.num_actions) == (3, 4)
        assert env.frame_shape == (84, 84) and env.frame_dtype == np.uint8
        assert (env.stack_size, env.codec) == (4, "lz4")
        assert env.episodic_life and env.fire_on_start  # Breakout has lives and needs FIRE
        first = env.reset()
        assert first.shape == (3, 84, 84) and first.dtype == np.uint8
        assert first.any()
        rng = np.random.default_rng(0)
        for _ in range(20):
            _check_step(env.step(rng.integers(0, 4, 3)), env)
        with pytest.raises(ValueError, match="actions"):
            _step(env, 0, 4, 0)
        with pytest.raises(ValueError, match="actions"):
            _step(env, 0, 0)


def test_pong_has_no_lives_so_no_episodic_life():
    with make_vector_env(PONG, 1, 0) as env:
        assert env.num_actions == 6 and not env.episodic_life and env.fire_on_start


def test_step_before_reset_is_an_error():
    with make_vector_env(BREAKOUT, 1, 0) as env, pytest.raises(RuntimeError, match="reset"):
        _step(env, 0)


def test_cartpole_shapes_and_episodes():
    with make_vector_env(CARTPOLE, 2, 0) as env:
        assert isinstance(env, GymVectorEnv)
        assert (env.num_actions, env.frame_shape, env.frame_dtype) == (2, (4,), np.float32)
        assert (env.stack_size, env.codec) == (1, "raw")
        first = env.reset()
        assert first.shape == (2, 4) and first.dtype == np.float32
        assert np.abs(first).max() <= 0.05  # CartPole starts near upright
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(200):
            out = env.step(rng.integers(0, 2, 2))
            _check_step(out, env)
            np.testing.assert_array_equal(out.game_over, out.terminated | out.truncated)
            assert (out.rewards == 1.0).all()
            for i in np.flatnonzero(out.game_over):
                ends += 1
                assert np.abs(out.restart_frames[i]).max() <= 0.05
                assert not np.array_equal(out.restart_frames[i], out.frames[i])
        assert ends >= 4  # random CartPole episodes last ~20 steps


def test_cartpole_time_limit_truncates():
    with make_vector_env(CARTPOLE, 1, 0) as env:
        obs = env.reset()[0]
        for t in range(1, 501):
            out = _step(env, int(obs[2] + 0.5 * obs[3] > 0))  # push towards the pole's fall
            obs = out.frames[0]
            if out.game_over[0]:
                break
        assert t == 500 and out.truncated[0] and not out.terminated[0]


# --------------------------------------------------------------------------- lives


def test_breakout_episodic_life_keeps_the_game_going():
    """The agent never presses FIRE: the env serves the ball itself (after the reset and
    after each life loss), so all 5 lives are lost; each loss is terminal for learning
    while the game goes on, its score running across lives."""
    with make_vector_env(BREAKOUT, 1, 0, episodic_life=True) as env:
        first = env.reset()
        assert env.lives()[0] == 5
        score, life_ends, lives, scoring_lives = 0.0, 0, 5, set()
        rng = np.random.default_rng(1)
        for _ in range(2000):
            frames_before = env.episode_frames()[0]
            out = _step(env, rng.choice([NOOP, RIGHT, LEFT]))
            _check_step(out, env)
            score += out.rewards[0]
            if out.rewards[0]:
                scoring_lives.add(lives)
            if out.game_over[0]:
                break
            if out.terminated[0]:
                life_ends += 1
                lives -= 1
                assert env.lives()[0] == lives  # same game, one life less
                assert env.episode_frames()[0] > frames_before  # not reset
                # the game continues from the final frame, one FIRE frame later
                assert np.abs(out.restart_frames[0].astype(int) - out.frames[0]).mean() < 2
            else:
                assert env.lives()[0] == lives
        else:
            pytest.fail("the game never ended: was the ball served after a life loss?")
        assert out.terminated[0] and not out.truncated[0]
        assert life_ends == 4  # the fifth loss is the game over
        assert score == 5 and len(scoring_lives) >= 2  # this seed's bricks, over several lives
        # the restart is a fresh game: 5 lives, score 0, first frames of an episode
        assert env.lives()[0] == 5 and env.episode_frames()[0] <= 31
        np.testing.assert_array_equal(out.restart_frames[0][HEADER_ROWS], first[0][HEADER_ROWS])
        assert not np.array_equal(out.frames[0][HEADER_ROWS], first[0][HEADER_ROWS])


def test_breakout_without_episodic_life_life_loss_is_not_terminal():
    with make_vector_env(BREAKOUT, 1, 0, episodic_life=False) as env:
        env.reset()
        lives_seen = {5}
        for _ in range(2000):
            out = _step(env, NOOP)
            _check_step(out, env)
            if out.terminated[0] or out.game_over[0]:
                break
            lives_seen.add(int(env.lives()[0]))
        assert out.terminated[0] and out.game_over[0]
        assert lives_seen == {1, 2, 3, 4, 5}  # every life was played before the one terminal


def test_truncation_after_max_episode_frames():
    # Pong has no lives and a random game lasts thousands of frames. With noop_max=0 the
    # reset spends 1 frame (FIRE); 24 steps reach frame 97, the 25th stops at frame 100.
    with make_vector_env(PONG, 2, 0, noop_max=0, max_episode_frames=100) as env:
        env.reset()
        assert (env.episode_frames() == 1).all()
        rng = np.random.default_rng(0)
        for t in range(1, 26):
            out = env.step(rng.integers(0, 6, 2))
            _check_step(out, env)
            if t < 25:
                assert not out.game_over.any()
        assert out.truncated.all() and out.game_over.all() and not out.terminated.any()
        assert (env.episode_frames() == 1).all()  # both restarted
        out = env.step(rng.integers(0, 6, 2))
        assert not out.game_over.any()


# --------------------------------------------------------------------------- rewards, seeds


def test_breakout_rewards_are_raw():
    """A paddle that follows the ball (positions from RAM) reaches the orange row (4)."""
    with make_vector_env(BREAKOUT, 1, 0) as env:
        env.reset()
        ale = env._ales[0]
        for _ in range(5000):
            ram = ale.getRAM()
            paddle_x, ball_x = int(ram[72]), int(ram[99])
            action = RIGHT if ball_x > paddle_x + 8 else LEFT if ball_x < paddle_x + 4 else NOOP
            out = _step(env, action)
            if out.rewards[0] > 1:
                break
        assert out.rewards[0] in (4.0, 7.0)


def _play(env, steps, seed):
    rng = np.random.default_rng(seed)
    frames = [env.reset()]
    rewards = []
    for _ in range(steps):
        out = env.step(rng.integers(0, env.num_actions, env.num_envs))
        frames += [out.frames, out.restart_frames]
        rewards.append(out.rewards)
    return np.stack(frames), np.stack(rewards)


def test_same_seed_same_frames_and_env_i_gets_seed_plus_i():
    with make_vector_env(BREAKOUT, 2, 7) as a, make_vector_env(BREAKOUT, 2, 7) as b:
        fa, ra = _play(a, 150, 0)
        fb, rb = _play(b, 150, 0)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ra, rb)
    # env 1 of seed 7 plays like env 0 of seed 8 (the same actions for both)
    with make_vector_env(BREAKOUT, 1, 8) as c:
        rng = np.random.default_rng(0)
        c.reset()
        with make_vector_env(BREAKOUT, 2, 7) as d:
            d.reset()
            for _ in range(150):
                acts = rng.integers(0, 4, 2)
                np.testing.assert_array_equal(d.step(acts).frames[1], c.step(acts[1:]).frames[0])


def test_cartpole_same_seed_same_frames():
    with (
        make_vector_env(CARTPOLE, 2, 3) as a,
        make_vector_env(CARTPOLE, 2, 3) as b,
        make_vector_env(CARTPOLE, 2, 4) as c,
    ):
        fa, _ = _play(a, 100, 0)
        fb, _ = _play(b, 100, 0)
        fc, _ = _play(c, 100, 0)
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)


# --------------------------------------------------------------------------- against gymnasium


@pytest.mark.parametrize("env_id, steps", [(BREAKOUT, 300), (PONG, 300)])
def test_frames_match_gymnasium_atari_preprocessing(env_id, steps):
    """Same frames and rewards as gymnasium's AtariPreprocessing (no no-ops, FIRE pressed
    for one frame after its reset as ours does), up to the first life lost or game end."""
    ref = gym.wrappers.AtariPreprocessing(
        gym.make(env_id, frameskip=1, repeat_action_probability=0.0), noop_max=0, frame_skip=4, screen_size=84
    )
    ref.reset(seed=0)
    ref.unwrapped.ale.act(FIRE)
    lives = ref.unwrapped.ale.lives()
    rng = np.random.default_rng(1)
    with make_vector_env(env_id, 1, 0, noop_max=0) as env:
        env.reset()
        for t in range(steps):
            a = int(rng.integers(0, env.num_actions))
            out = _step(env, a)
            obs, reward, terminated, truncated, _ = ref.step(a)
            np.testing.assert_array_equal(out.frames[0], obs, err_msg=f"step {t}")
            assert out.rewards[0] == reward
            if terminated or ref.unwrapped.ale.lives() < lives:
                break
        assert t >= 20
