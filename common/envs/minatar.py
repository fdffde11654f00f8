"""MinAtar's five games (Young & Tian 2019) behind the :class:`VectorEnv` interface.

:class:`MinAtarVectorEnv` (``MinAtar/Breakout-v1`` and the other four games; the optional
``minatar`` extra, GPL-3.0) plays the game modules of the ``minatar`` package directly:
frames are the game's 10x10xC boolean state as ``uint8[C, 10, 10]``, one frame per agent
step and no stacking (the paper's agents see one state), raw rewards (the paper does not
clip), sticky actions (the paper's 0.1 unless ``repeat_action_probability`` says otherwise);
``-v1`` ids use the game's minimal action set, ``-v0`` ids and ``full_action_space`` all 6
actions. ``max_episode_frames`` truncates (MinAtar has no time limit of its own but
Freeway's; the default is the Atari protocol's number, counted in agent steps here);
``noop_max`` and ``episodic_life`` do not apply. The game modules are loaded from their
files, without the ``minatar`` package's display imports (:func:`_minatar_env_class`).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from common.envs.base import EnvSpecError, EnvStep, VectorEnv
from common.envs.ids import MINATAR_INSTALL_HINT
from common.envs.protocol import ATARI_MAX_EPISODE_FRAMES

#: MinAtar's own default and the paper's setting (Young & Tian 2019).
MINATAR_REPEAT_ACTION_PROBABILITY = 0.1
#: numpy's legacy ``RandomState`` (what MinAtar's games draw from) takes seeds below 2**32.
RANDOM_STATE_SEED_LIMIT = 2**32


def _minatar_env_class(game: str):
    """The ``Env`` class of ``minatar.environments.<game>``, loaded from its file so that the
    ``minatar`` package's own init, which imports matplotlib and seaborn for its display
    (≈ 1.5 s of CPU in every actor process), never runs. The game modules need only numpy."""
    import sys
    from pathlib import Path

    name = f"_raydqn_minatar_{game}"
    if name not in sys.modules:
        package = importlib.util.find_spec("minatar")
        if package is None:
            raise EnvSpecError(f"MinAtar is not installed: {MINATAR_INSTALL_HINT}")
        path = Path(list(package.submodule_search_locations)[0]) / "environments" / f"{game}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].Env


class MinAtarVectorEnv(VectorEnv):
    """E MinAtar games (Young & Tian 2019), stepped one after the other.

    Frames ``uint8[C, 10, 10]``: the game's boolean 10x10xC state, channels first, one per
    agent step (``stack_size`` 1: the paper's network sees one state; MinAtar's states carry
    the motion that Atari needs 4 frames for, e.g. Breakout's trail channel). Rewards are the
    game's (0/1 but for Seaquest's surfacing bonus), never clipped, as in the paper. Sticky
    actions as MinAtar's ``Environment.act``: with probability ``repeat_action_probability``
    the previous action is played instead; the previous action is NOOP after each reset, as
    ALE's. A game is truncated after ``max_episode_frames`` agent steps (one frame each).
    """

    frame_dtype = np.dtype(np.uint8)
    stack_size = 1
    codec = "lz4"  # 100-byte frames of 0/1: lz4 on the raw bytes, like the Atari frames
    frames_per_step = 1
    clip_rewards = False
    atari = False

    def __init__(
        self,
        game: str,
        num_envs: int,
        seed: int,
        *,
        max_episode_frames: int = ATARI_MAX_EPISODE_FRAMES,
        repeat_action_probability: float = MINATAR_REPEAT_ACTION_PROBABILITY,
        full_action_space: bool = False,
    ):
        if max_episode_frames < 1:
            raise ValueError(f"max_episode_frames must be >= 1, got {max_episode_frames}")
        if not 0.0 <= repeat_action_probability <= 1.0:
            raise ValueError(f"repeat_action_probability must lie in [0, 1], got {repeat_action_probability}")
        env_class = _minatar_env_class(game)
        self.game = game
        self.num_envs = num_envs
        self.max_episode_frames = max_episode_frames
        self.repeat_action_probability = float(repeat_action_probability)
        self._games = [env_class(ramping=True) for _ in range(num_envs)]  # difficulty ramping: MinAtar's default
        for i, g in enumerate(self._games):
            g.random = np.random.RandomState((seed + i) % RANDOM_STATE_SEED_LIMIT)  # MinAtar's games draw from .random
        self._sticky_rngs = [np.random.default_rng([seed + i, 1]) for i in range(num_envs)]
        self._action_set = list(range(6)) if full_action_space else list(self._games[0].minimal_action_set())
        self.num_actions = len(self._action_set)
        height, width, channels = self._games[0].state_shape()
        self.frame_shape = (int(channels), int(height), int(width))
        self._last_action = np.zeros(num_envs, np.int64)
        self._steps = np.zeros(num_envs, np.int64)
        self._started = False

    def _frame(self, i: int) -> np.ndarray:
        return self._games[i].state().transpose(2, 0, 1).astype(np.uint8)

    def _reset_one(self, i: int) -> np.ndarray:
        self._games[i].reset()
        self._last_action[i] = 0
        self._steps[i] = 0
        return self._frame(i)

    def reset(self) -> np.ndarray:
        frames = np.stack([self._reset_one(i) for i in range(self.num_envs)])
        self._started = True
        return frames

    def step(self, actions: np.ndarray) -> EnvStep:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        n = self.num_envs
        frames = np.empty((n, *self.frame_shape), np.uint8)
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        for i, game in enumerate(self._games):
            action = self._action_set[actions[i]]
            if self._sticky_rngs[i].random() < self.repeat_action_probability:
                action = int(self._last_action[i])
            self._last_action[i] = action
            reward, ended = game.act(action)
            self._steps[i] += 1
            frames[i] = self._frame(i)
            rewards[i] = reward
            terminated[i] = bool(ended)
        truncated = (self._steps >= self.max_episode_frames) & ~terminated
        game_over = terminated | truncated
        restart = frames.copy()
        for i in np.flatnonzero(game_over):
            restart[i] = self._reset_one(i)
        return EnvStep(frames, rewards, terminated, truncated, game_over, restart)

    def close(self) -> None:
        self._games = []
        self._started = False
