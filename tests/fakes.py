"""Test doubles: a vector env whose pixels encode (env, step), so stacks and records are exact."""

from __future__ import annotations

import numpy as np

from common.envs import EnvStep


class CountingEnv:
    """E envs; env i's frame at its t-th observation of a game is filled with 100*i + t.

    ``episode_lengths[i]`` agent steps after each start, env i's game ends: terminated if
    ``truncate`` is False, truncated otherwise. Rewards are 2.0 per step (raw), so clipping
    is visible. ``lose_life_at`` makes step k of each game a life loss (terminal for
    learning, game goes on, frame counter continues).
    """

    num_actions = 3
    frame_shape = (2, 2)
    frame_dtype = np.uint8
    stack_size = 4
    codec = "lz4"

    def __init__(self, episode_lengths, truncate=False, lose_life_at=None):
        self.num_envs = len(episode_lengths)
        self.lengths = np.asarray(episode_lengths)
        self.truncate = truncate
        self.lose_life_at = lose_life_at
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self.actions_seen: list[np.ndarray] = []

    def _frames(self, t):
        vals = (100 * np.arange(self.num_envs) + t).astype(np.uint8)
        return np.broadcast_to(vals[:, None, None], (self.num_envs, 2, 2)).copy()

    def reset(self):
        self.t[:] = 0
        return self._frames(self.t)

    def step(self, actions):
        self.actions_seen.append(np.asarray(actions).copy())
        self.t += 1
        frames = self._frames(self.t)
        over = self.t >= self.lengths
        life = np.zeros(self.num_envs, bool) if self.lose_life_at is None else (self.t == self.lose_life_at) & ~over
        terminated = (over & (not self.truncate)) | life
        truncated = over & self.truncate
        restart = frames.copy()
        self.t[over] = 0
        restart[over] = self._frames(self.t)[over]
        return EnvStep(frames=frames, rewards=np.full(self.num_envs, 2.0, np.float32), terminated=terminated,
                       truncated=truncated, game_over=over, restart_frames=restart)

    def close(self):
        pass
