"""A mirror of one replay shard's frame ring on the learner's device (the mirror feed).

Why: a stacked batch of 512 is ≈ 29 MB of frames, each frame decompressed and sent about 8
times over its life in the replay; the GPU could take batches far faster than Ray and one
shard's decompression deliver them (docs/design-notes.md). Here each frame crosses once: a
replay answer (``common.messages.IndexBatch``) carries the frames the mirror lacks (a
``FrameDelta``, compressed as they arrived) and the sample as frame uids;
:meth:`FrameMirror.apply` writes the delta into a ring of the shard's capacity on the
device, and :meth:`FrameMirror.gather` builds the stacks there with one index.

Position. Each request carries the mirror's own position (:meth:`FrameMirror.position`,
``replay_server.mirror_protocol``): the shard epoch of its frames and the uid below which
it holds every stored frame. The shard answers from there, so nothing it keeps can drift
from the mirror: after a lost answer, a lost reset or a restarted shard the next request
says where the mirror really is. A delta of another epoch comes as a ``reset`` (the mirror
forgets what it holds); a delta that starts beyond the mirror's position (the answer it
followed was lost) is dropped, and the next request starts from the position again.

Ordering. The replay answers one caller's requests in the order they were sent (Ray runs an
actor's calls from one caller in order), and the caller handles answers in that order:
apply answer k's delta, gather answer k, then answer k+1. So when answer k is gathered the
mirror holds exactly the frames the shard held when it drew k: every frame k names (it was
stored then, so it came in answer k's delta or an earlier one), and none that replaced one
of them afterwards (those come in later deltas). On CUDA the copies into the ring and the
gathers are queued on one stream, in that same order, through one pinned staging buffer
per mirror (:class:`Stage`) that never grows: a large delta goes through it in chunks. The
mirror checks the claim rather than trusting it: it records the uid held at each position,
and a gather whose uids differ raises :class:`MirrorError`.

Plain torch and numpy, no Ray (``learner/feed.py`` makes the calls).
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import torch

from common.messages import FrameDelta, IndexBatch, SampleBatch, decompress_frames
from replay_server.mirror_protocol import FeedPosition

#: Pinned host memory of one mirror's staging buffer (a delta larger goes through in chunks).
STAGE_BYTES = 32 * 2**20
#: Frames decompressed at a time when a delta is written into a CPU ring.
WRITE_CHUNK = 4096


class MirrorError(RuntimeError):
    """A gather named a frame the mirror does not hold: the ordering contract was broken."""


def mirror_bytes(capacity: int, frame_shape: tuple[int, ...], frame_dtype: str) -> int:
    """Device memory of a mirror of ``capacity`` frames."""
    return int(capacity) * math.prod(frame_shape) * np.dtype(frame_dtype).itemsize


def _pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


class Stage:
    """One host buffer of at most ``max_bytes`` (pinned, for asynchronous copies to the
    device), reused chunk after chunk once its last copy has finished. It is allocated once
    per frame format and never grows (``allocations`` counts how often it was made).
    ``alloc`` and ``event`` make the buffer and the CUDA event; tests pass plain ones."""

    def __init__(self, max_bytes: int = STAGE_BYTES, alloc=_pinned, event=None):
        self.max_bytes = int(max_bytes)
        self.alloc = alloc
        self.event = event or torch.cuda.Event
        self.buffer: torch.Tensor | None = None
        self.rows = 0
        self.allocations = 0
        self._free = None  # the event recorded after the last copy out of the buffer

    def rows_for(self, frame_shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Frames per chunk for this format (allocates the buffer if the format is new)."""
        shape = (frame_shape, dtype)
        if self.buffer is None or (tuple(self.buffer.shape[1:]), self.buffer.dtype) != shape:
            frame = math.prod(frame_shape) * torch.empty((), dtype=dtype).element_size()
            self.rows = max(1, self.max_bytes // max(frame, 1))
            self.buffer, self._free = None, None  # the old one goes before the new one is made
            self.buffer = self.alloc((self.rows, *frame_shape), dtype)
            self.allocations += 1
        return self.rows

    def put(self, frames: np.ndarray) -> torch.Tensor:
        """``frames`` (at most ``rows``) in the buffer, once its previous copy has finished."""
        if self._free is not None:
            self._free.synchronize()
        self.buffer.numpy()[: len(frames)] = frames
        return self.buffer[: len(frames)]

    def copied(self) -> None:
        """Call after queuing the copies out of the buffer."""
        if self._free is None:
            self._free = self.event()
        self._free.record()

    @property
    def nbytes(self) -> int:
        return 0 if self.buffer is None else self.buffer.numel() * self.buffer.element_size()


class FrameMirror:
    """The frame ring of one replay shard of ``capacity`` records, on ``device``.

    The ring (``dtype[capacity, *frame_shape]``) is allocated from the first delta that
    carries frames, so its shape and dtype are the shard's own. ``stage``: the staging
    buffer for copies to the device (a pinned :class:`Stage` on CUDA; None writes a CPU
    ring directly).
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu", stage: Stage | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.ring: torch.Tensor | None = None
        self.spec: tuple[str, tuple[int, ...], str] | None = None  # codec, shape, dtype
        self.held = np.full(self.capacity, -1, dtype=np.int64)  # uid at each position; -1: none
        self.epoch = -1  # the shard epoch of the frames held; -1: none yet
        self.next_uid = 0  # every stored frame of the epoch below this uid is held
        self.stage = stage if stage is not None or self.device.type == "cpu" else Stage()
        self.token = secrets.randbits(62)  # names this mirror to the shard
        self.seq = 0  # requests asked for
        self.chained = False  # the next request may follow the previous one's answer
        self.dropped = 0  # deltas dropped because an answer before them was lost

    @property
    def in_sync(self) -> bool:
        """The mirror holds frames of a shard epoch (it has had a reset)."""
        return self.epoch >= 0

    # ---- requests ------------------------------------------------------------------------
    def position(self) -> FeedPosition:
        """The position the next request carries (call once per request, in the order sent)."""
        self.seq += 1
        after = self.seq - 1 if self.chained else -1
        self.chained = True
        return FeedPosition(self.epoch, self.next_uid, self.token, self.seq, after)

    def forget(self) -> None:
        """Hold nothing: the next request asks for every stored frame (its shard failed)."""
        self.held.fill(-1)
        self.epoch, self.next_uid, self.chained = -1, 0, False

    # ---- deltas --------------------------------------------------------------------------
    def apply(self, delta: FrameDelta) -> bool:
        """Write the frames the mirror lacks into the ring; False if the delta was dropped.

        A ``reset`` delta replaces everything; another continues the mirror when it is of
        the mirror's epoch and starts at or before its position (frames it already holds
        are skipped). Otherwise an answer before it was lost: it is dropped, and the next
        request starts from the mirror's position.
        """
        if delta.reset:
            self.held.fill(-1)
            self.epoch, self.next_uid = delta.epoch, delta.first_uid
        elif delta.epoch != self.epoch or delta.since_uid > self.next_uid:
            self.chained = False
            self.dropped += 1
            return False
        skip = max(self.next_uid - delta.first_uid, 0)
        if len(delta) > skip:
            self._write(delta, skip)
        self.next_uid = max(self.next_uid, delta.end_uid)
        return True

    def _write(self, delta: FrameDelta, skip: int) -> None:
        """Frames ``skip:`` of the delta into the ring."""
        spec = (delta.codec, tuple(delta.frame_shape), delta.frame_dtype)
        if spec != self.spec:
            self._allocate(spec)
        k, lo = len(delta), delta.first_uid
        if k > self.capacity or int(delta.positions[0]) != lo % self.capacity:
            raise MirrorError(f"delta of {k} frames from uid {lo} does not fit a ring of {self.capacity}")
        mv, off = memoryview(delta.blobs), delta.offsets.tolist()
        chunk = WRITE_CHUNK if self.stage is None else self.stage.rows_for(spec[1], self.ring.dtype)
        for c0 in range(skip, k, chunk):
            c1 = min(c0 + chunk, k)
            frames = decompress_frames([mv[off[i] : off[i + 1]] for i in range(c0, c1)], *spec)
            self._store(lo + c0, frames)
        self.held[delta.positions[skip:]] = np.arange(lo + skip, lo + k, dtype=np.int64)

    def _store(self, uid: int, frames: np.ndarray) -> None:
        """Consecutive frames from ``uid`` into the ring (at most two runs of it)."""
        k, p0 = len(frames), uid % self.capacity
        n1 = min(k, self.capacity - p0)
        if self.stage is None:
            ring = self.ring.numpy()
            ring[p0 : p0 + n1] = frames[:n1]
            ring[: k - n1] = frames[n1:]
            return
        src = self.stage.put(frames)
        self.ring[p0 : p0 + n1].copy_(src[:n1], non_blocking=True)
        if n1 < k:
            self.ring[: k - n1].copy_(src[n1:], non_blocking=True)
        self.stage.copied()

    def _allocate(self, spec: tuple[str, tuple[int, ...], str]) -> None:
        _codec, shape, dtype = spec
        self.ring = torch.empty((self.capacity, *shape), dtype=_torch_dtype(dtype), device=self.device)
        self.spec = spec
        self.held.fill(-1)

    # ---- samples -------------------------------------------------------------------------
    def gather(self, batch: IndexBatch) -> SampleBatch:
        """The batch with ``obs`` and ``next_obs`` as tensors on the mirror's device,
        ``dtype[B, S, *frame_shape]``, equal to what the shard's stacked ``sample`` gives;
        the other fields as the answer has them. MirrorError if the mirror does not hold
        exactly the frames the batch names (call after this answer's :meth:`apply`)."""
        uids = np.concatenate([batch.obs_uids, batch.next_uids])  # int64[2B, S]
        pos = uids % self.capacity
        if not self.in_sync or not np.array_equal(self.held[pos], uids):
            bad = int(np.count_nonzero(self.held[pos] != uids))
            raise MirrorError(
                f"the mirror lacks {bad} of the {uids.size} frames a batch names (in sync: {self.in_sync})"
            )
        index = torch.from_numpy(pos)
        if self.device.type == "cuda":
            index = index.pin_memory().to(self.device, non_blocking=True)
        stacks = self.ring[index]  # dtype[2B, S, *shape]
        b = len(batch.ids)
        return SampleBatch(
            ids=batch.ids,
            obs=stacks[:b],
            actions=batch.actions,
            returns=batch.returns,
            discounts=batch.discounts,
            next_obs=stacks[b:],
            weights=batch.weights,
        )


def _torch_dtype(name: str) -> torch.dtype:
    return {"uint8": torch.uint8, "float32": torch.float32}[name]
