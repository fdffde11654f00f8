"""The actor's logic, without Ray: step a vector of envs with an eps-greedy Q-network and
cut each env's experience into :class:`~common.messages.StepBatch` records.

Per env stream, each agent step appends one record (the frame acted on, the action, the
clipped reward, the end flags). When an episode segment ends, one final-frame record
(``action = -1``) follows, then the continuation starts a new segment (``first=True``).
That is the stream grammar in ``common/messages.py``; the replay relies on it.

Initial priorities (Ape-X, ``initial_priorities=True``) are computed from the actor's own
Q-values or distributions with the learner's rule for its head (``actors/priorities.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from typing import Callable

import numpy as np
import torch

from actors.acting import ActingNetwork
from actors.priorities import PriorityRule, StreamRecords, resolve
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


class ActorCore:
    """Steps ``env`` (a ``common.envs.VectorEnv``) with an eps-greedy copy of the Q-network.

    network: an :class:`~actors.acting.ActingNetwork` (the Q-network in the precision
        the actor acts in), or a plain ``nn.Module``, run as it is (fp32).

    epsilons: a function of the actor's agent steps per stream that returns float[E], so
        fixed (Ape-X) and decaying schedules look the same here.
    stream_ids: globally unique ids of this actor's E env streams.
    clip_rewards: send sign(reward) for learning (Atari); the raw score is still reported.
    initial_priorities: send Ape-X initial priorities with every StepBatch (see the module
        docstring); ``n_step`` and ``gamma`` must then be the replay's. ``step()`` then
        sends a stream's records once at least ``steps_per_batch`` of them have known
        priorities (all of those, the open tail stays). Off: no priorities (the replay
        starts items at its max priority), batches cut at ``steps_per_batch`` as before.
    """

    def __init__(
        self,
        env,
        network: ActingNetwork | torch.nn.Module,
        epsilons: Callable[[int], np.ndarray],
        stream_ids: list[int],
        steps_per_batch: int,
        frames_per_step: int,
        clip_rewards: bool,
        seed: int,
        record: bool = True,
        initial_priorities: bool = False,
        n_step: int = 3,
        gamma: float = 0.99,
        kappa: float = 1.0,
    ):
        if len(stream_ids) != env.num_envs:
            raise ValueError(f"{len(stream_ids)} stream ids for {env.num_envs} envs")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.env = env
        self.acting = network if isinstance(network, ActingNetwork) else ActingNetwork(network, "fp32")
        self.network = self.acting.network  # the fp32 master the published weights load into
        self.epsilons = epsilons
        self.stream_ids = list(stream_ids)
        self.steps_per_batch = steps_per_batch
        self.frames_per_step = frames_per_step
        self.clip_rewards = clip_rewards
        self.record = record
        self.initial_priorities = bool(initial_priorities)
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        kind, atoms = getattr(self.network, "kind", "expected"), getattr(self.network, "atoms", None)
        self.rule = PriorityRule(self.n_step, self.gamma, kind, None if atoms is None else atoms.double(), kappa)
        self._last = None  # the ActOutputs of the stacks select_actions last saw
        self.rng = np.random.default_rng(seed)
        self.policy_version = 0
        self.agent_steps = 0
        self.steps_per_stream = 0
        # A deque: the Ray shell drains it from another thread while step() appends.
        self.episodes: collections.deque[EpisodeStats] = collections.deque()
        n = env.num_envs
        self.stacker = FrameStacker(n, env.stack_size, env.frame_shape, env.frame_dtype)
        self.records = [StreamRecords() for _ in range(n)]
        self.sent = [0] * n  # records sent per stream: the next batch's seq
        self.scores = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.frames = env.reset()
        self.is_first = np.ones(n, dtype=bool)
        self.stacker.start(self.frames)

    @property
    def env_frames(self) -> int:
        return self.agent_steps * self.frames_per_step

    def set_weights(self, state_dict: dict, version: int) -> None:
        """Load published weights (numpy arrays or tensors) between steps, converted to the
        acting precision."""
        self.acting.load(state_dict)
        self.policy_version = int(version)

    def select_actions(self, epsilons: np.ndarray) -> np.ndarray:
        """eps-greedy actions int64[E]: one batched forward pass over all env stacks."""
        self._last = self.acting.outputs(self.stacker.stacks)
        actions = self._last.q.argmax(axis=1)
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
        ended = out.terminated | out.truncated
        if self.record:
            self._record(actions, out, ended)
        for i in np.flatnonzero(out.game_over):
            self.episodes.append(
                EpisodeStats(self.stream_ids[i], float(self.scores[i]), int(self.lengths[i]), float(eps[i]))
            )
            self.scores[i] = 0.0
            self.lengths[i] = 0
        # Continuations start new segments; the others push their newest frame.
        frames = np.where(_expand(ended, out.frames.ndim), out.restart_frames, out.frames)
        self.stacker.push(frames, ~ended)
        self.stacker.start(frames, ended)
        self.frames = frames
        self.is_first = ended.copy()
        if self.record and self.initial_priorities:
            # Cut only where every record's priority is known: the complete prefix.
            ready = [(i, len(rec.prios)) for i, rec in enumerate(self.records)]
            return [self._batch(i, self.records[i].split(k)) for i, k in ready if k >= self.steps_per_batch]
        return self.flush(min_records=self.steps_per_batch)

    def _record(self, actions: np.ndarray, out, ended: np.ndarray) -> None:
        """Append this step's record to each stream (and a final-frame record where it ended);
        with initial priorities, the values they need, then the priorities now known."""
        n = len(actions)
        learn_rewards = np.sign(out.rewards) if self.clip_rewards else out.rewards
        prioritize = self.initial_priorities
        taken, greedy, fractions, final = self._priority_inputs(actions, out) if prioritize else ([0.0] * n,) * 4
        v = self.policy_version
        for i, rec in enumerate(self.records):
            # float32 as sent, so R is computed from exactly the replay's rewards.
            reward = float(np.float32(learn_rewards[i]))
            first, term, trunc = bool(self.is_first[i]), bool(out.terminated[i]), bool(out.truncated[i])
            rec.append(
                self.frames[i], int(actions[i]), first, v, reward, term, trunc, taken[i], greedy[i], fractions[i]
            )
            if ended[i]:
                rec.append(out.frames[i].copy(), NO_ACTION, False, v, q_taken=0 * greedy[i], q_max=final[i])
        if prioritize:
            self._resolve(self.records)

    def _priority_inputs(self, actions: np.ndarray, out) -> tuple[list, list, list, list]:
        """Per env: the value (expected head: Q(s_t, a_t), float) or distribution (float[M])
        of the action taken, that of the greedy action (the bootstrap of the record k steps
        back), the fractions of the taken one (qr, iqn; else None), and the bootstrap of the
        final frame's stack where the env ended (0 when terminated; truncated envs' final
        stacks were never acted on: one forward pass for those envs only)."""
        last, rows = self._last, np.arange(len(actions))
        values = last.q.astype(np.float64) if last.dist is None else last.dist.astype(np.float64)
        taken, greedy = values[rows, actions], values[rows, last.q.argmax(axis=1)]
        final = np.zeros_like(greedy)
        trunc = np.flatnonzero(out.truncated & ~out.terminated)
        if trunc.size:
            stacks = self.stacker.stacks[trunc]
            final_stacks = np.concatenate([stacks[:, 1:], out.frames[trunc][:, None].astype(stacks.dtype)], axis=1)
            final[trunc] = self._greedy_values(final_stacks)
        fractions = [None] * len(actions) if last.fractions is None else list(last.fractions.astype(np.float64))
        as_list = (lambda a: a.tolist()) if last.dist is None else list
        return as_list(taken), as_list(greedy), fractions, as_list(final)

    def _greedy_values(self, stacks: np.ndarray) -> np.ndarray:
        """max_a Q (float64[B]), or the greedy action's distribution (float64[B, M])."""
        o = self.acting.outputs(stacks)
        if o.dist is None:
            return o.q.astype(np.float64).max(axis=1)
        return o.dist[np.arange(len(stacks)), o.q.argmax(axis=1)].astype(np.float64)

    def flush(self, min_records: int = 1) -> list[StepBatch]:
        """StepBatches of every stream holding at least ``min_records`` records (all of them).

        With initial priorities, records whose n-step window is still open get the
        approximate priority of the module docstring (window cut at the newest record,
        bootstrap from max_a Q of the current stack; one forward over those streams).
        """
        chosen = [i for i, rec in enumerate(self.records) if len(rec) >= min_records and len(rec) > 0]
        if self.initial_priorities:
            open_ = [i for i in chosen if len(self.records[i].prios) < len(self.records[i])]
            if open_:
                q_now = self._greedy_values(self.stacker.stacks[open_])
                self._resolve([self.records[i] for i in open_], tail_q=q_now)
        batches = []
        for i in chosen:
            batches.append(self._batch(i, self.records[i]))
            self.records[i] = StreamRecords()
        return batches

    def _resolve(self, recs: list[StreamRecords], tail_q: np.ndarray | None = None) -> None:
        """Extend each ``rec.prios`` over every record whose n-step window is complete
        (``actors.priorities.resolve``; ``tail_q``: the flush's bootstrap per stream)."""
        resolve(recs, self.rule, tail_q)

    def _batch(self, i: int, rec: StreamRecords) -> StepBatch:
        priorities = None
        if self.initial_priorities:
            priorities = np.asarray(rec.prios, dtype=np.float32)
            if not np.all(np.isfinite(priorities)):
                # A diverged network: send none, so the replay falls back to its max priority.
                priorities = None
        seq = self.sent[i]
        self.sent[i] += len(rec.frames)
        return StepBatch.from_frames(
            self.stream_ids[i],
            np.stack(rec.frames),
            self.env.codec,
            actions=np.asarray(rec.actions, dtype=np.int32),
            rewards=np.asarray(rec.rewards, dtype=np.float32),
            terminated=np.asarray(rec.terminated, dtype=bool),
            truncated=np.asarray(rec.truncated, dtype=bool),
            first=np.asarray(rec.first, dtype=bool),
            policy_version=np.asarray(rec.versions, dtype=np.int64),
            priorities=priorities,
            seq=seq,
        )

    def drain_episodes(self) -> list[EpisodeStats]:
        """Finished episodes since the last call (safe to call from another thread)."""
        out = []
        while self.episodes:
            out.append(self.episodes.popleft())
        return out


def _expand(mask: np.ndarray, ndim: int) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (ndim - 1))
