"""Flat-vector gymnasium envs (``CartPole-v1``, ``LunarLander-v3``, ...) behind the :class:`VectorEnv` interface.

:class:`GymVectorEnv` is a list of ``gymnasium.make`` envs stepped in a loop and reset by
hand as soon as an episode ends, observations as float32 vectors, one frame per agent step
and no stacking. Their own ``TimeLimit`` truncates; ``episodic_life``, ``noop_max``,
``max_episode_frames``, ``repeat_action_probability`` and ``full_action_space`` do not apply
to them. Resetting by hand keeps an episode's final observation in the step that ended it
(``frames``) and the new episode's first in ``restart_frames``, as :class:`EnvStep` asks of
every family. Only registered ids with a flat Box observation and Discrete actions are
accepted (:func:`make_flat_env`).
"""

from __future__ import annotations

import numpy as np

from common.envs.base import EnvSpecError, EnvStep, VectorEnv
from common.envs.ids import gym_with_ale, registered_spec


def _check_flat_env(env_id: str, env) -> None:
    from gymnasium.spaces import Box, Discrete

    obs, act = env.observation_space, env.action_space
    if not (isinstance(obs, Box) and len(obs.shape) == 1):
        raise EnvSpecError(f"environment {env_id!r} has observation space {obs}; only flat Box vectors are supported")
    if not isinstance(act, Discrete):
        raise EnvSpecError(f"environment {env_id!r} has action space {act}; only Discrete actions are supported")


def make_flat_env(env_id: str):
    """One ``gymnasium.make(env_id)`` env, checked to have a flat Box observation and Discrete
    actions; EnvSpecError (one line) for an unknown id, one that fails to build, or other spaces."""
    gym = gym_with_ale()
    if registered_spec(env_id) is None:
        raise EnvSpecError(f"unknown environment {env_id!r}: not an ALE game or a registered gymnasium id")
    try:
        env = gym.make(env_id)
    except Exception as e:  # missing extra dependencies (box2d, mujoco), bad kwargs
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EnvSpecError(f"environment {env_id!r} cannot be created: {first_line}") from None
    try:
        _check_flat_env(env_id, env)
    except EnvSpecError:
        env.close()
        raise
    return env


class GymVectorEnv(VectorEnv):
    """E gymnasium envs with flat Box observations (as float32) and Discrete actions,
    stepped in a loop and reset by hand as soon as an episode ends. game_over is
    terminated | truncated (no lives)."""

    frame_dtype = np.dtype(np.float32)
    stack_size = 1
    codec = "raw"
    frames_per_step = 1
    clip_rewards = False
    atari = False

    def __init__(self, env_id: str, num_envs: int, seed: int):
        self.env_id = env_id
        self.num_envs = num_envs
        self.seed = seed
        self._envs = [make_flat_env(env_id) for _ in range(num_envs)]
        space = self._envs[0].action_space
        self.num_actions = int(space.n)
        self._action_start = int(space.start)
        self.frame_shape = tuple(int(d) for d in self._envs[0].observation_space.shape)
        self._seeded = False

    def _reset_one(self, i: int) -> np.ndarray:
        seed = None if self._seeded else self.seed + i
        obs, _ = self._envs[i].reset(seed=seed)
        return np.asarray(obs, np.float32)

    def reset(self) -> np.ndarray:
        frames = np.stack([self._reset_one(i) for i in range(self.num_envs)])
        self._seeded = True
        return frames

    def step(self, actions: np.ndarray) -> EnvStep:
        if not self._seeded:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        n = self.num_envs
        frames = np.empty((n, *self.frame_shape), np.float32)
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        for i, env in enumerate(self._envs):
            obs, reward, term, trunc, _ = env.step(int(actions[i]) + self._action_start)
            frames[i] = obs
            rewards[i] = reward
            terminated[i] = term
            truncated[i] = trunc and not term
        game_over = terminated | truncated
        restart = frames.copy()
        for i in np.flatnonzero(game_over):
            restart[i] = self._reset_one(i)
        return EnvStep(frames, rewards, terminated, truncated, game_over, restart)

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []
