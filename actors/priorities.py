"""Ape-X's initial priorities, computed by the actor: which records have them, and the rule.

Each record with an action at
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

For a distributional head the priority is the learner's per-item loss for the head
(``common.distributional.distributional_item_loss``: Rainbow's rule for C51, the quantile
Huber loss for QR and IQN) on the actor's own distributions: the taken action's against
``R + discount *`` the greedy action's distribution k steps later. No Ray here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from common.distributional import distributional_item_loss
from common.messages import NO_ACTION
from common.nstep import n_step_windows


@dataclasses.dataclass(frozen=True)
class PriorityRule:
    """The settings the priorities depend on: the replay's ``n_step`` and ``gamma``, the head
    (``kind``; c51's ``atoms``, float64[N]), and the quantile Huber loss's ``kappa``."""

    n_step: int
    gamma: float
    kind: str = "expected"
    atoms: torch.Tensor | None = None
    kappa: float = 1.0


class StreamRecords:
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

    def split(self, m: int) -> "StreamRecords":
        """Remove the first ``m`` records and return them (priorities included)."""
        head = StreamRecords()
        for name in self._LISTS:
            values = getattr(self, name)
            setattr(head, name, values[:m])
            setattr(self, name, values[m:])
        return head


def resolve(recs: list[StreamRecords], rule: PriorityRule, tail: np.ndarray | None = None) -> None:
    """Extend each ``rec.prios`` over every record whose n-step window is complete.

    One ``common.nstep`` call over the records still without a priority, all streams at once
    (a window only reads forward; each stream's part starts a segment of its own, so none
    reaches into the next). Priorities stop at a stream's first incomplete window, unless
    ``tail`` (flush; per stream max Q, or the greedy action's distribution) is given: then
    incomplete windows are cut at the stream's newest record and bootstrap from it. A
    terminated window needs no bootstrap value.
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
    ended = terminated | np.array(cat("truncated"), dtype=bool)
    w = n_step_windows(cat("rewards"), terminated, ended, first, rule.n_step, rule.gamma)
    final = np.array(cat("actions")) == NO_ACTION
    if rule.kind == "expected":
        prios = _td_priorities(w, cat("q_taken"), cat("q_max"), tail, sizes)
    else:
        prios = _loss_priorities(w, cat, tail, sizes, rule)
    prios[final] = 0.0
    ready = (w.complete | final) if tail is None else np.ones(prios.size, dtype=bool)
    for rec, lo, hi in zip(recs, offsets[:-1].tolist(), offsets[1:].tolist()):
        still_open = np.flatnonzero(~ready[lo:hi])
        rec.prios.extend(prios[lo : lo + int(still_open[0]) if still_open.size else hi].tolist())


def _loss_priorities(w, cat, tail, sizes, rule: PriorityRule) -> np.ndarray:
    """A distributional head's per-item loss (c51: projected; terminal windows put all mass at R)."""
    taken, greedy = np.stack(cat("q_taken")), np.stack(cat("q_max"))
    tail = np.zeros((len(sizes),) + greedy.shape[1:]) if tail is None else np.asarray(tail, dtype=np.float64)
    boot = np.where(w.complete[:, None], greedy[np.minimum(w.bootstrap, len(greedy) - 1)], np.repeat(tail, sizes, 0))
    if rule.kind == "c51":  # log-probabilities to probabilities; any distribution where nothing bootstraps
        boot = np.where(w.discounts[:, None] > 0, np.exp(boot), 1.0 / boot.shape[1])
    fractions = cat("fractions")
    if all(f is None for f in fractions):
        fractions = None
    else:  # a final-frame record (no item) has none: zeros of the same width
        fractions = torch.from_numpy(np.stack([np.zeros(taken.shape[1]) if f is None else f for f in fractions]))
    with torch.no_grad():
        prios = distributional_item_loss(
            rule.kind,
            torch.from_numpy(taken),
            torch.from_numpy(boot),
            torch.from_numpy(np.asarray(w.returns, dtype=np.float64)),
            torch.from_numpy(np.asarray(w.discounts, dtype=np.float64)),
            atoms=rule.atoms,
            fractions=fractions,
            kappa=rule.kappa,
        )
    return prios.double().numpy()


def _td_priorities(w, q_taken: list, q_max: list, tail_q, sizes) -> np.ndarray:
    """|R + discount * max_a Q(s_{t+k}) - Q(s_t, a_t)| in float64 (the expected head's rule)."""
    q_max = np.array(q_max, dtype=np.float64)
    tail = np.repeat(np.zeros(len(sizes)) if tail_q is None else np.asarray(tail_q, dtype=np.float64), sizes)
    boot = np.where(w.complete, q_max[np.minimum(w.bootstrap, q_max.size - 1)], tail)
    boot = np.where(w.discounts > 0, boot, 0.0)
    return np.abs(w.returns + w.discounts * boot - np.array(q_taken, dtype=np.float64))
