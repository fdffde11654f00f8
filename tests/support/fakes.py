"""Test doubles: vector envs whose pixels encode (env, step), so stacks and records are
exact, and the one builder of StepBatches from record tuples."""

from __future__ import annotations

import numpy as np

from common.envs import EnvStep
from common.messages import StepBatch

_ARRAY_FIELDS = ("actions", "rewards", "terminated", "truncated", "first")


def step_batch(
    stream_id,
    records,
    *,
    start=0,
    seq=None,
    frames=None,
    flat=False,
    codec=None,
    priorities=None,
    policy_version=0,
    **arrays,
) -> StepBatch:
    """A validated StepBatch of ``records``: ``(action, reward, terminated, truncated, first)``
    tuples in stream order (tests/nstep_cases.py writes them).

    Unless ``frames`` are given, they encode (stream, step) with step = ``start + i``:
    ``uint8[T, 2, 2]`` with row 0 = stream and row 1 = step (both mod 256), lz4; or with
    ``flat``, ``float32[T, 3]`` = (stream, step, 0.25), raw. The codec follows the frame
    dtype unless given. ``seq`` defaults to ``start``. Arrays passed by keyword replace the
    ones built from ``records`` (to build batches that break the grammar).
    """
    t = len(records)
    steps = np.arange(start, start + t)
    if frames is None and flat:
        frames = np.stack([np.full(t, stream_id), steps, np.full(t, 0.25)], axis=1).astype(np.float32)
    elif frames is None:
        frames = np.zeros((t, 2, 2), dtype=np.uint8)
        frames[:, 0, :] = stream_id % 256
        frames[:, 1, :] = (steps % 256)[:, None]
    frames = np.asarray(frames)
    cols = [np.array(col) for col in zip(*records)]
    fields = {
        name: col.astype(dtype)
        for name, col, dtype in zip(_ARRAY_FIELDS, cols, (np.int32, np.float32, bool, bool, bool))
    }
    fields["policy_version"] = np.full(t, policy_version, dtype=np.int64)
    fields["priorities"] = None if priorities is None else np.asarray(priorities, dtype=np.float32)
    fields.update(arrays)
    codec = codec or ("raw" if frames.dtype == np.float32 else "lz4")
    return StepBatch.from_frames(stream_id, frames, codec, seq=start if seq is None else seq, **fields)


def assert_same_state(a, b, where="state"):
    """Deep equality of two state trees (dicts, lists, numpy arrays, plain values), naming
    the first place they differ."""
    assert type(a) is type(b) or (isinstance(a, list) and isinstance(b, list)), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, list):
        assert len(a) == len(b) and all(x == y for x, y in zip(a, b)), where
    else:
        assert a == b, where


class ScriptedEnv:
    """One env that plays a stream of records from tests/nstep_cases.py: the frame of record
    i is filled with i, and acting on record i pays its reward and ends as it says (every
    end is a game over; the next segment starts on the frame of the record after the final
    frame). It cannot play an actor restart (a segment without an end)."""

    num_envs = 1
    num_actions = 3
    frame_shape = (2, 2)
    frame_dtype = np.uint8
    stack_size = 4
    codec = "lz4"

    def __init__(self, records):
        self.records = list(records)
        self.acted = [i for i, rec in enumerate(self.records) if rec[0] != -1]  # record index of each step
        self.k = 0

    @staticmethod
    def _frame(value):
        return np.full((1, 2, 2), value, dtype=np.uint8)

    def reset(self):
        self.k = 0
        return self._frame(0)

    def step(self, actions):
        i = self.acted[self.k]
        self.k += 1
        _, reward, term, trunc, _ = self.records[i]
        ended = term or trunc
        flags = np.array([ended])
        return EnvStep(
            frames=self._frame(i + 1),
            rewards=np.array([reward], np.float32),
            terminated=np.array([term]),
            truncated=np.array([trunc]),
            game_over=flags,
            restart_frames=self._frame(i + 2 if ended else i + 1),
        )

    def close(self):
        pass


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
        return EnvStep(
            frames=frames,
            rewards=np.full(self.num_envs, 2.0, np.float32),
            terminated=terminated,
            truncated=truncated,
            game_over=over,
            restart_frames=restart,
        )

    def close(self):
        pass
