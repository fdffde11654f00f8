"""The replay's side of the mirror feed: a sample as frame uids, plus the frames the caller lacks.

A learner with ``--feed mirror`` keeps a copy of each shard's frame ring on its device
(``learner/mirror.py``). Each request it sends carries the mirror's own position, a
:class:`FeedPosition` (the shard epoch its frames are of, and the uid below which it holds
every stored frame); the answer (``common.messages.IndexBatch``) carries the frames from
there on (a ``FrameDelta``) and the sample as frame uids. The position travels with every
request, so nothing the shard keeps can drift from the mirror: a lost answer, a restarted
shard or a restored snapshot is repaired by the next request, which says where the mirror
really is. A position of another epoch (or none) gets a ``reset`` delta: every stored frame.

Requests are pipelined (the learner keeps several in flight), so a request's position is
behind the answers still in flight ahead of it. To send each frame once all the same, a
request may name the request whose answer the mirror applies just before its own
(``after``); the shard remembers the end of its last answer to each consumer
(:class:`AnswerEnds`) and, when that answer is the one named, starts there. This is a hint
the request checks, never a cursor: if the named answer was lost the mirror sees a delta
that starts beyond its position, drops it, and its next request names none.

Plain numpy, no Ray; :class:`replay_server.buffer.ReplayBuffer` provides the frames and the
draw.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from common.messages import FrameDelta, IndexBatch

#: Most frames one answer's FrameDelta carries: a consumer further behind (a new one, or
#: after a restore, up to a whole shard) catches up over several answers without a batch.
MAX_DELTA_FRAMES = 32_768
#: Consumers whose last answer's end a shard remembers (older ones start from their position).
MAX_CONSUMERS = 64


@dataclasses.dataclass(frozen=True)
class FeedPosition:
    """Where a consumer's mirror stands, sent with each ``sample_indices`` request.

    ``epoch``: the shard epoch of the frames it holds (-1: none yet); ``next_uid``: it holds
    every stored frame of that epoch below this uid. ``token`` names the consumer, ``seq``
    numbers its requests, and ``after`` is the ``seq`` of the request whose answer it will
    apply just before this one's (-1: start from ``next_uid``).
    """

    epoch: int = -1
    next_uid: int = 0
    token: int = 0
    seq: int = 0
    after: int = -1


class AnswerEnds:
    """Per consumer token, ``(seq, epoch, end_uid)`` of the last answer sent (bounded, oldest out)."""

    def __init__(self, max_consumers: int = MAX_CONSUMERS):
        self.max_consumers = int(max_consumers)
        self._ends: collections.OrderedDict[int, tuple[int, int, int]] = collections.OrderedDict()

    def start(self, position: FeedPosition | None, epoch: int, records_added: int) -> int | None:
        """The uid the answer's delta starts from, or None for a reset (every stored frame).

        When the request names this consumer's last answer (``after``), the mirror will
        have applied it first (or dropped this one): the delta starts where that answer
        ended, even if the position the request carries is of an epoch that answer reset.
        """
        last = self._ends.get(position.token) if position is not None and position.after >= 0 else None
        if last is not None and last[0] == position.after and last[1] == epoch and last[2] <= records_added:
            return max(last[2], position.next_uid if position.epoch == epoch else 0)
        if position is None or position.epoch != epoch or not 0 <= position.next_uid <= records_added:
            return None
        return position.next_uid

    def record(self, position: FeedPosition | None, epoch: int, end_uid: int) -> None:
        if position is None:
            return
        self._ends[position.token] = (position.seq, epoch, end_uid)
        self._ends.move_to_end(position.token)
        while len(self._ends) > self.max_consumers:
            self._ends.popitem(last=False)

    def clear(self) -> None:
        self._ends.clear()


def frame_delta(buffer, since: int | None, max_frames: int = MAX_DELTA_FRAMES) -> FrameDelta:
    """The frames ``buffer`` stores from uid ``since`` on, at most ``max_frames`` of them,
    oldest first; every stored frame (``reset``) when ``since`` is None."""
    reset = since is None
    lowest, end = buffer.lowest_stored_uid, buffer.records_added
    lo = lowest if reset else max(since, lowest)
    hi = min(end, lo + max(int(max_frames), 1))
    blobs = buffer.stored_blobs(lo, hi)
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)), out=offsets[1:])
    codec, shape, dtype = buffer.frame_spec or ("raw", (), "uint8")
    return FrameDelta(
        epoch=buffer.epoch,
        since_uid=-1 if reset else since,
        first_uid=lo,
        end_uid=hi,
        reset=reset,
        codec=codec,
        frame_shape=tuple(shape),
        frame_dtype=dtype,
        positions=(np.arange(lo, hi, dtype=np.int64) % buffer.capacity).astype(np.int32),
        offsets=offsets,
        blobs=np.frombuffer(b"".join(blobs), dtype=np.uint8),
    )


def sample_indices(
    buffer,
    ends: AnswerEnds,
    batch_size: int,
    beta: float = 0.4,
    position: FeedPosition | None = None,
    draw: bool = True,
    max_delta_frames: int = MAX_DELTA_FRAMES,
) -> IndexBatch:
    """A sample of ``buffer`` as frame uids, with the frames a mirror at ``position`` lacks.

    A consumer that applies each answer's delta, in the order it asked, before gathering
    that answer's uids, holds every frame they name and none newer in their slots (see
    ``learner/mirror.py``). Items are drawn as ``ReplayBuffer.sample`` draws them, unless
    ``draw`` is False (the rate limiter said wait) or the delta has not caught up (more than
    ``max_delta_frames`` behind): then the answer carries the delta alone. Raises
    ValueError if a draw finds no item.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    delta = frame_delta(buffer, ends.start(position, buffer.epoch, buffer.records_added), max_delta_frames)
    ends.record(position, buffer.epoch, delta.end_uid)
    if not draw or delta.end_uid < buffer.records_added:
        return IndexBatch(delta=delta)
    slots, weights = buffer.draw(batch_size, beta)
    items = buffer.item_fields(slots)
    return IndexBatch(
        delta=delta,
        ids=items["ids"],
        obs_uids=items["obs_uids"],
        next_uids=items["next_uids"],
        actions=items["actions"],
        returns=items["returns"],
        discounts=items["discounts"],
        weights=np.asarray(weights, dtype=np.float32),
    )


class PositionKeeper:
    """A consumer that applies every answer in order (an in-process tool or test, no mirror):
    its position follows the deltas. ``keeper(batch_size, beta, **kw)`` calls
    ``sample_indices(batch_size, beta, position, **kw)`` of a buffer or a server."""

    def __init__(self, sample_indices):
        self.sample_indices = sample_indices
        self.position = FeedPosition()

    def __call__(self, batch_size: int, beta: float = 0.4, **kw) -> IndexBatch:
        answer = self.sample_indices(batch_size, beta, self.position, **kw)
        self.position = FeedPosition(answer.delta.epoch, answer.delta.end_uid)
        return answer
