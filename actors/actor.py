"""The actor's logic, without Ray: step a vector of envs with an eps-greedy Q-network and
cut each env's experience into :class:`~common.messages.StepBatch` records.

Per env stream, each agent step appends one record (the frame acted on, the action, the
clipped reward, the end flags). When an episode segment ends, one final-frame record
(``action = -1``) follows, then the continuation starts a new segment (``first=True``).
That is the stream grammar in ``common/messages.py``; the replay relies on it.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import warnings

import numpy as np
import torch

from common.messages import NO_ACTION, StepBatch
from common.stacking import FrameStacker

# Arrays from Ray's object store are read-only; torch only reads them here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


@dataclasses.dataclass
class EpisodeStats:
    """One finished game: raw score (unclipped, all lives), agent steps, eps of its stream."""

    stream_id: int
    score: float
    agent_steps: int
    epsilon: float


class _StreamRecords:
    """Records of one stream not yet sent (plain lists; flushed into a StepBatch)."""

    __slots__ = ("frames", "actions", "rewards", "terminated", "truncated", "first", "versions")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.actions)

    def append(self, frame, action, first, version, reward=0.0, terminated=False, truncated=False):
        self.frames.append(frame)
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.first.append(first)
        self.versions.append(version)


class ActorCore:
    """Steps ``env`` (a ``common.envs.VectorEnv``) with an eps-greedy copy of the Q-network.

    epsilons: a function of the actor's agent steps per stream that returns float[E], so
        fixed (Ape-X) and decaying schedules look the same here.
    stream_ids: globally unique ids of this actor's E env streams.
    clip_rewards: send sign(reward) for learning (Atari); the raw score is still reported.
    """

    def __init__(
        self,
        env,
        network: torch.nn.Module,
        epsilons: Callable[[int], np.ndarray],
        stream_ids: list[int],
        steps_per_batch: int,
        frames_per_step: int,
        clip_rewards: bool,
        seed: int,
        record: bool = True,
    ):
        if len(stream_ids) != env.num_envs:
            raise ValueError(f"{len(stream_ids)} stream ids for {env.num_envs} envs")
        self.env = env
        self.network = network.eval()
        self.epsilons = epsilons
        self.stream_ids = list(stream_ids)
        self.steps_per_batch = steps_per_batch
        self.frames_per_step = frames_per_step
        self.clip_rewards = clip_rewards
        self.record = record
        self.rng = np.random.default_rng(seed)
        self.policy_version = 0
        self.agent_steps = 0
        self.steps_per_stream = 0
        # A deque: the Ray shell drains it from another thread while step() appends.
        self.episodes: collections.deque[EpisodeStats] = collections.deque()
        n = env.num_envs
        self.stacker = FrameStacker(n, env.stack_size, env.frame_shape, env.frame_dtype)
        self.records = [_StreamRecords() for _ in range(n)]
        self.scores = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.frames = env.reset()
        self.is_first = np.ones(n, dtype=bool)
        self.stacker.start(self.frames)

    @property
    def env_frames(self) -> int:
        return self.agent_steps * self.frames_per_step

    def set_weights(self, state_dict: dict, version: int) -> None:
        """Load published weights (numpy arrays or tensors) between steps."""
        self.network.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
        self.policy_version = int(version)

    def select_actions(self, epsilons: np.ndarray) -> np.ndarray:
        """eps-greedy actions int64[E]: one batched forward pass over all env stacks."""
        with torch.inference_mode():
            q = self.network(torch.from_numpy(self.stacker.stacks))
        actions = q.argmax(dim=1).numpy()
        explore = self.rng.random(len(actions)) < epsilons
        if explore.any():
            actions[explore] = self.rng.integers(0, self.env.num_actions, size=int(explore.sum()))
        return actions

    def step(self) -> list[StepBatch]:
        """One agent step of every env; returns the StepBatches that became full."""
        eps = np.asarray(self.epsilons(self.steps_per_stream), dtype=np.float64)
        actions = self.select_actions(eps)
        out = self.env.step(actions)
        self.agent_steps += self.env.num_envs
        self.steps_per_stream += 1
        self.scores += out.rewards
        self.lengths += 1
        learn_rewards = np.sign(out.rewards) if self.clip_rewards else out.rewards
        ended = out.terminated | out.truncated
        if self.record:
            v = self.policy_version
            for i, rec in enumerate(self.records):
                rec.append(self.frames[i], int(actions[i]), bool(self.is_first[i]), v,
                           float(learn_rewards[i]), bool(out.terminated[i]), bool(out.truncated[i]))
                if ended[i]:
                    rec.append(out.frames[i].copy(), NO_ACTION, False, v)
        for i in np.flatnonzero(out.game_over):
            self.episodes.append(EpisodeStats(self.stream_ids[i], float(self.scores[i]), int(self.lengths[i]), float(eps[i])))
            self.scores[i] = 0.0
            self.lengths[i] = 0
        # Continuations start new segments; the others push their newest frame.
        frames = np.where(_expand(ended, out.frames.ndim), out.restart_frames, out.frames)
        self.stacker.push(frames, ~ended)
        self.stacker.start(frames, ended)
        self.frames = frames
        self.is_first = ended.copy()
        return self.flush(min_records=self.steps_per_batch)

    def flush(self, min_records: int = 1) -> list[StepBatch]:
        """StepBatches of every stream holding at least ``min_records`` records."""
        batches = []
        for i, rec in enumerate(self.records):
            if len(rec) >= min_records and len(rec) > 0:
                batches.append(
                    StepBatch.from_frames(
                        self.stream_ids[i],
                        np.stack(rec.frames),
                        self.env.codec,
                        actions=np.asarray(rec.actions, dtype=np.int32),
                        rewards=np.asarray(rec.rewards, dtype=np.float32),
                        terminated=np.asarray(rec.terminated, dtype=bool),
                        truncated=np.asarray(rec.truncated, dtype=bool),
                        first=np.asarray(rec.first, dtype=bool),
                        policy_version=np.asarray(rec.versions, dtype=np.int64),
                    )
                )
                self.records[i] = _StreamRecords()
        return batches

    def drain_episodes(self) -> list[EpisodeStats]:
        """Finished episodes since the last call (safe to call from another thread)."""
        out = []
        while self.episodes:
            out.append(self.episodes.popleft())
        return out


def _expand(mask: np.ndarray, ndim: int) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (ndim - 1))
