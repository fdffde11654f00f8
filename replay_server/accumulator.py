"""Which records of a stream become replay items: frame stacks and complete n-step windows.

Dopamine's ``TransitionAccumulator``, for the stream grammar of ``common.messages``: pure
functions of what the replay remembers of one stream (:class:`StreamState`) and a batch of
its records. They store nothing; :class:`~replay_server.buffer.ReplayBuffer` writes what
they return into its slots.

* :func:`admit`: a batch whose ``seq`` does not follow the stream's last one (records were
  lost, or the replay came back from a snapshot) starts a new segment instead of splicing.
* :func:`check_grammar`: the grammar checks that need the stream's history.
* :func:`accumulate`: stacks of the new records, and the items whose n-step window
  completed (``common.nstep``); the open segment's incomplete tail stays pending.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.messages import NO_ACTION, MessageError, StepBatch
from common.nstep import n_step_windows

_BATCH_ARRAYS = ("actions", "rewards", "terminated", "truncated", "first", "policy_version")


@dataclasses.dataclass
class StreamState:
    """What the replay remembers of one actor stream between batches."""

    last_uid: int
    last_final: bool  # the last record was a final-frame record (next must be first=True)
    last_ended: bool  # the last record terminated or truncated (next must be its final frame)
    last_stack: np.ndarray  # int64[S], stack_uids of the last record
    # int64[<= n]: uids of the open segment's tail whose n-step window is incomplete, in
    # time order. Evicted uids may linger at its front until the stream's next batch.
    pending: np.ndarray
    pending_rewards: np.ndarray  # float32[<= n], their rewards (evicted ones: never read)
    pending_terminated: np.ndarray  # bool[<= n]
    next_seq: int = 0  # the seq the stream's next batch should carry; anything else is a gap


@dataclasses.dataclass
class Accumulated:
    """What :func:`accumulate` makes of M records with uids ``uids[0] ..``."""

    stacks: np.ndarray  # int64[M, S], uids of each record's stack, oldest first
    next_uid: np.ndarray  # int64[M], the next record of the same segment (-1: none yet)
    items: np.ndarray  # int64[K], uids of the items whose window completed
    returns: np.ndarray  # float64[K]
    discounts: np.ndarray  # float64[K]
    boot_uids: np.ndarray  # int64[K], uid of each item's bootstrap record
    dropped: int  # stored items whose window can never complete (their segment was cut)
    state: StreamState  # the stream after these records


def admit(state: StreamState | None, batch: StepBatch) -> tuple[StepBatch | None, int]:
    """``batch`` as the replay should take it, and the number of records lost before or in it.

    On a gap (``seq`` is not the stream's next, and the batch does not open the stream with
    ``first``) what follows cannot continue the stored segment: it starts a new one, and a
    leading final-frame record, whose episode end is gone, is dropped (None if nothing is
    left). An actor that starts over (seq 0, first=True) is not a gap.
    """
    expected = state.next_seq if state is not None else 0
    if expected == batch.seq or (state is None and batch.first[0]):
        return batch, 0
    lost = max(batch.seq - expected, 0)
    if batch.actions[0] == NO_ACTION:
        lost += 1
        if len(batch) == 1:
            return None, lost
        fields = {f: getattr(batch, f)[1:] for f in _BATCH_ARRAYS}
        fields["priorities"] = None if batch.priorities is None else batch.priorities[1:]
        batch = dataclasses.replace(batch, frame_blobs=batch.frame_blobs[1:], seq=batch.seq + 1, **fields)
    if not batch.first[0]:
        first = batch.first.copy()
        first[0] = True
        batch = dataclasses.replace(batch, first=first)
    return batch, lost


def check_grammar(stream_id: int, state: StreamState | None, first, final, ended) -> None:
    """MessageError for grammar breaks that need the stream's history, or that validate() leaves out.

    ``StepBatch.validate`` already enforces, inside the batch: an end is followed by a
    final-frame record, and a final-frame record by a first record. A ``first`` record
    is always accepted (an actor that restarts may cut a segment anywhere).
    """
    if np.any(final & first):
        raise MessageError(f"stream {stream_id}: a final-frame record (action -1) has first=True")
    bad = np.flatnonzero(final[1:] & ~ended[:-1])
    if bad.size:
        raise MessageError(
            f"stream {stream_id}: final-frame record at index {bad[0] + 1} does not follow an episode end"
        )
    if first[0]:
        return
    if state is None:
        raise MessageError(f"stream {stream_id}: never seen before, but its first record has first=False")
    if state.last_final:
        raise MessageError(f"stream {stream_id}: record after a final-frame record has first=False")
    if state.last_ended and not final[0]:
        raise MessageError(
            f"stream {stream_id}: the episode end in the previous batch is not followed by its final-frame record"
        )
    if final[0] and not state.last_ended:
        raise MessageError(f"stream {stream_id}: final-frame record at index 0 does not follow an episode end")


def stacks_of(uids: np.ndarray, first: np.ndarray, prev_stack: np.ndarray) -> np.ndarray:
    """Stacks ``int64[M, S]`` of records ``uids`` (consecutive in their stream).

    The S frames ending at each record, clamped to its segment start (older positions repeat
    the segment's first frame); before a first record the stream's previous stack
    ``prev_stack`` continues.
    """
    s, m = prev_stack.size, uids.size
    idx = np.arange(m)
    seg_start = np.maximum.accumulate(np.where(first, idx, -1))  # -1: segment continues from before
    ext = np.concatenate([prev_stack, uids])  # ext[s + i] is record i; ext[:s] the previous stack
    floor = np.where(seg_start >= 0, seg_start + s, 0)
    pos = (idx + s)[:, None] - np.arange(s - 1, -1, -1)[None, :]
    return ext[np.maximum(pos, floor[:, None])]


def _carried(state: StreamState | None, first: bool, stack_size: int, lowest_stored: int):
    """What a batch continues from: (items dropped, pending uids, their rewards and
    terminated flags, the previous stack). A batch that starts a segment abandons the
    stream's pending tail (counted as dropped unless already evicted)."""
    if not first:
        return 0, state.pending, state.pending_rewards, state.pending_terminated, state.last_stack
    dropped = int(np.count_nonzero(state.pending >= lowest_stored)) if state is not None else 0
    empty = np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.bool_)
    return dropped, *empty, np.zeros(stack_size, dtype=np.int64)  # the stack is never read: stacks start at 0


def accumulate(
    state: StreamState | None,
    uids,
    rewards,
    terminated,
    ended,
    first,
    final,
    stack_size: int,
    n_step: int,
    gamma: float,
    lowest_stored: int,
) -> Accumulated:
    """Stacks and completed windows of M grammatical records of one stream.

    ``state`` is the stream before them (None: never seen; ignored when ``first[0]``).
    Windows run over the pending tail, then these records (``common.nstep``). Uids below
    ``lowest_stored`` are gone: their items are neither reported nor counted as dropped.
    A first record at index 0 abandons the pending tail (counted as dropped).
    """
    dropped, pending, p_rew, p_term, prev_stack = _carried(state, bool(first[0]), stack_size, lowest_stored)
    stacks = stacks_of(uids, first, prev_stack)
    nxt = np.full(uids.size, -1, dtype=np.int64)
    nxt[:-1] = np.where(first[1:], -1, uids[1:])
    ctx_uid = np.concatenate([pending, uids])
    ctx_rew = np.concatenate([p_rew, rewards]).astype(np.float32)
    ctx_term = np.concatenate([p_term, terminated])
    ctx_first, ctx_final, ctx_ended = (
        np.concatenate([np.zeros(pending.size, np.bool_), a]) for a in (first, final, ended)
    )
    if pending.size and state.last_ended:  # the stream's last record ended: it is the newest pending one
        ctx_ended[pending.size - 1] = True
    win = n_step_windows(ctx_rew, ctx_term, ctx_ended, ctx_first, n_step, gamma)
    is_item = ~ctx_final & (ctx_uid >= lowest_stored)
    starts = np.flatnonzero(ctx_first)
    closed = np.arange(ctx_uid.size) < (starts[-1] if starts.size else 0)  # a later first cut the segment
    open_ = np.flatnonzero(is_item & ~win.complete & ~closed)
    dropped += int(np.count_nonzero(is_item & ~win.complete & closed))
    done = np.flatnonzero(is_item & win.complete)
    last = uids.size - 1
    new_state = StreamState(
        last_uid=int(uids[last]),
        last_final=bool(final[last]),
        last_ended=bool(ended[last]),
        last_stack=stacks[last].copy(),
        pending=ctx_uid[open_],
        pending_rewards=ctx_rew[open_],
        pending_terminated=ctx_term[open_],
    )
    return Accumulated(
        stacks=stacks,
        next_uid=nxt,
        items=ctx_uid[done],
        returns=win.returns[done],
        discounts=win.discounts[done],
        boot_uids=ctx_uid[win.bootstrap[done]],
        dropped=dropped,
        state=new_state,
    )
