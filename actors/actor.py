"""The actor's logic, without Ray: step a vector of envs with an eps-greedy Q-network and
cut each env's experience into :class:`~common.messages.StepBatch` records.

Per env stream, each agent step appends one record (the frame acted on, the action, the
clipped reward, the end flags). When an episode segment ends, one final-frame record
(``action = -1``) follows, then the continuation starts a new segment (``first=True``).
That is the stream grammar in ``common/messages.py``; the replay relies on it.

Initial priorities (Ape-X, ``initial_priorities=True``). Each record with an action at
time t is sent with the priority

    p_t = | R_t + discount_t * max_a Q(s_{t+k}, a) - Q(s_t, a_t) |

where k, R_t and discount_t come from ``common.nstep``, the one n-step rule the replay
uses too: k = min(n, steps until the segment ended), R_t = sum_{j<k} gamma^j r_{t+j} over
the clipped rewards that are sent, discount_t = gamma^k * (1 - terminated_{t+k-1}); a
truncated window keeps gamma^k and bootstraps from the final frame's stack. Final-frame
records (action -1) are not items and get priority 0. As in Ape-X, Q is the actor's own
copy of the online network: the learner uses double DQN with a target network, but the
actor holds one network, so the bootstrap is plain ``max_a Q(s_{t+k}, a)`` of that net.

Cost: ``select_actions`` already evaluates Q on every stack it acts on; Q(s_t, a_t) and
max_a Q(s_t) are kept with each record, so no forward pass is added per step. The one
exception is a truncated segment, whose final frame's stack is never acted on: one extra
batched forward runs over the envs truncated in that step (rare). A terminated window
bootstraps with 0 and needs nothing.

Consequence: p_t is known only once record t+k exists, so ``step()`` sends only records
whose window is complete and holds back the (at most n) newest records of each open
segment. ``flush()`` must send everything (the shell flushes while it waits for the rate
limiter, and at the end), so it *approximates* the incomplete windows: a window that
reaches past the newest record T is cut there, k' = T + 1 - t, R over r_t..r_T, discount
gamma^k', bootstrapping from max_a Q of the stack the env currently sits on (s_{T+1}, one
batched forward over all streams that need it). This only changes the initial
priorities; the replay computes the learning targets (R, discount, bootstrap) itself,
from the full window, once it completes.
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from typing import Callable

import numpy as np
import torch

from actors.acting import ActingNetwork
from common.distributional import distributional_item_loss
from common.messages import NO_ACTION, StepBatch
from common.nstep import n_step_windows
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
    """Records of one stream not yet sent (plain lists; flushed into a StepBatch).

    With initial priorities, ``q_taken``/``q_max`` hold Q(s_t, a_t) and max_a Q(s_t) of
    each record (for a final-frame record: 0 and the bootstrap value of its stack), and
    ``prios`` the priorities known so far: those of the first ``len(prios)`` records. For a
    distributional head they hold the distributions of the taken and of the greedy action
    (float[M] each), and ``fractions`` the quantile fractions of the taken one (qr, iqn).
    """

    _LISTS = (
        "frames",
        "actions",
        "rewards",
        "terminated",
        "truncated",
        "first",
        "versions",
        "q_taken",
        "q_max",
        "fractions",
        "prios",
    )
    __slots__ = _LISTS

    def __init__(self):
        for name in self._LISTS:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.actions)

    def append(
        self,
        frame,
        action,
        first,
        version,
        reward=0.0,
        terminated=False,
        truncated=False,
        q_taken=0.0,
        q_max=0.0,
        fractions=None,
    ):
        self.frames.append(frame)
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.first.append(first)
        self.versions.append(version)
        self.q_taken.append(q_taken)
        self.q_max.append(q_max)
        self.fractions.append(fractions)

    def split(self, m: int) -> "_StreamRecords":
        """Remove the first ``m`` records and return them (priorities included)."""
        head = _StreamRecords()
        for name in self._LISTS:
            values = getattr(self, name)
            setattr(head, name, values[:m])
            setattr(self, name, values[m:])
        return head


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
        self.kappa = float(kappa)  # the quantile Huber threshold of the learner's loss (qr, iqn)
        self.kind = getattr(self.network, "kind", "expected")
        self._last = None  # the ActOutputs of the stacks select_actions last saw
        self.rng = np.random.default_rng(seed)
        self.policy_version = 0
        self.agent_steps = 0
        self.steps_per_stream = 0
        # A deque: the Ray shell drains it from another thread while step() appends.
        self.episodes: collections.deque[EpisodeStats] = collections.deque()
        n = env.num_envs
        self.stacker = FrameStacker(n, env.stack_size, env.frame_shape, env.frame_dtype)
        self.records = [_StreamRecords() for _ in range(n)]
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
        learn_rewards = np.sign(out.rewards) if self.clip_rewards else out.rewards
        ended = out.terminated | out.truncated
        prioritize = self.record and self.initial_priorities
        if prioritize:
            taken, greedy, fractions, final = self._priority_inputs(actions, out)
        if self.record:
            v = self.policy_version
            for i, rec in enumerate(self.records):
                if prioritize:
                    # float32 as sent, so R is computed from exactly the replay's rewards.
                    rec.append(
                        self.frames[i],
                        int(actions[i]),
                        bool(self.is_first[i]),
                        v,
                        float(np.float32(learn_rewards[i])),
                        bool(out.terminated[i]),
                        bool(out.truncated[i]),
                        taken[i],
                        greedy[i],
                        fractions[i],
                    )
                    if ended[i]:
                        rec.append(out.frames[i].copy(), NO_ACTION, False, v, q_taken=0 * greedy[i], q_max=final[i])
                    continue
                rec.append(
                    self.frames[i],
                    int(actions[i]),
                    bool(self.is_first[i]),
                    v,
                    float(learn_rewards[i]),
                    bool(out.terminated[i]),
                    bool(out.truncated[i]),
                )
                if ended[i]:
                    rec.append(out.frames[i].copy(), NO_ACTION, False, v)
            if prioritize:
                self._resolve(self.records)
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
        if prioritize:
            # Cut only where every record's priority is known: the complete prefix.
            batches = []
            for i, rec in enumerate(self.records):
                ready = len(rec.prios)
                if ready >= self.steps_per_batch:
                    batches.append(self._batch(i, rec.split(ready)))
            return batches
        return self.flush(min_records=self.steps_per_batch)

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
            self.records[i] = _StreamRecords()
        return batches

    def _resolve(self, recs: list[_StreamRecords], tail_q: np.ndarray | None = None) -> None:
        """Extend each ``rec.prios`` over every record whose n-step window is complete
        (``tail_q``: max Q, or for a distributional head the greedy action's distribution per stream).

        One ``common.nstep`` call over the records still without a priority, all streams
        at once (a window only reads forward; each stream's part starts a segment of its
        own, so none reaches into the next). Priorities stop at a stream's first incomplete
        window, unless ``tail_q`` (float[len(recs)], flush) is given: then incomplete
        windows are cut at the stream's newest record and bootstrap from its ``tail_q``.
        A terminated window needs no bootstrap value.
        """
        starts = [len(rec.prios) for rec in recs]
        sizes = np.array([len(rec) - t0 for rec, t0 in zip(recs, starts)])
        if not sizes.any():
            return

        def cat(name):  # one list of the field over every stream's part
            return [x for rec, t0 in zip(recs, starts) for x in getattr(rec, name)[t0:]]

        offsets = np.concatenate([[0], np.cumsum(sizes)])
        first = np.zeros(offsets[-1], dtype=bool)
        first[offsets[:-1][sizes > 0]] = True
        terminated = np.array(cat("terminated"), dtype=bool)
        w = n_step_windows(
            cat("rewards"),
            terminated,
            terminated | np.array(cat("truncated"), dtype=bool),
            first,
            self.n_step,
            self.gamma,
        )
        final = np.array(cat("actions")) == NO_ACTION
        if self.kind == "expected":
            prios = _td_priorities(w, cat("q_taken"), cat("q_max"), tail_q, sizes)
        else:
            prios = self._loss_priorities(w, cat, tail_q, sizes)
        prios[final] = 0.0
        ready = (w.complete | final) if tail_q is None else np.ones(prios.size, dtype=bool)
        for rec, lo, hi in zip(recs, offsets[:-1].tolist(), offsets[1:].tolist()):
            still_open = np.flatnonzero(~ready[lo:hi])
            rec.prios.extend(prios[lo : lo + int(still_open[0]) if still_open.size else hi].tolist())

    def _loss_priorities(self, w, cat, tail, sizes) -> np.ndarray:
        """The learner's per-item loss of a distributional head as each record's priority
        (``common.distributional``), from the actor's own network: the taken action's
        distribution against R + discount * the greedy action's distribution k steps later
        (c51: projected; terminal windows put all mass at R)."""
        taken, greedy = np.stack(cat("q_taken")), np.stack(cat("q_max"))
        tail = np.zeros((len(sizes),) + greedy.shape[1:]) if tail is None else np.asarray(tail, dtype=np.float64)
        boot = np.where(
            w.complete[:, None], greedy[np.minimum(w.bootstrap, len(greedy) - 1)], np.repeat(tail, sizes, 0)
        )
        network = self.network
        if self.kind == "c51":  # log-probabilities to probabilities; any distribution where nothing bootstraps
            boot = np.where(w.discounts[:, None] > 0, np.exp(boot), 1.0 / boot.shape[1])
        fractions = cat("fractions")
        fractions = (
            None if fractions[0] is None else torch.from_numpy(np.stack([_or_zeros(f, taken) for f in fractions]))
        )
        with torch.no_grad():
            prios = distributional_item_loss(
                self.kind,
                torch.from_numpy(taken),
                torch.from_numpy(boot),
                torch.from_numpy(np.asarray(w.returns, dtype=np.float64)),
                torch.from_numpy(np.asarray(w.discounts, dtype=np.float64)),
                atoms=network.atoms.double(),
                fractions=fractions,
                kappa=self.kappa,
            )
        return prios.double().numpy()

    def _batch(self, i: int, rec: _StreamRecords) -> StepBatch:
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


def _td_priorities(w, q_taken: list, q_max: list, tail_q, sizes) -> np.ndarray:
    """|R + discount * max_a Q(s_{t+k}) - Q(s_t, a_t)| in float64 (the expected head's rule)."""
    q_max = np.array(q_max, dtype=np.float64)
    tail = np.repeat(np.zeros(len(sizes)) if tail_q is None else np.asarray(tail_q, dtype=np.float64), sizes)
    boot = np.where(w.complete, q_max[np.minimum(w.bootstrap, q_max.size - 1)], tail)
    boot = np.where(w.discounts > 0, boot, 0.0)
    return np.abs(w.returns + w.discounts * boot - np.array(q_taken, dtype=np.float64))


def _or_zeros(fractions, like: np.ndarray) -> np.ndarray:
    """A final-frame record's fractions (None: it is no item) as zeros of the taken values' width."""
    return np.zeros(like.shape[1]) if fractions is None else fractions
