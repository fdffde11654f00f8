"""A mirror of one replay shard's frame ring on the learner's device (the mirror feed).

Why: a stacked batch of 512 is ≈ 29 MB of frames, each frame decompressed and sent about 8
times over its life in the replay; the GPU could take batches far faster than Ray and one
shard's decompression deliver them (docs/design-notes.md, DESIGN.md). Here each frame
crosses once: a replay answer (``common.messages.IndexBatch``) carries the frames stored
since its previous answer (a ``FrameDelta``, compressed as they arrived) and the sample as
frame uids; :meth:`FrameMirror.apply` writes the delta into a ring of the shard's capacity
on the device, and :meth:`FrameMirror.gather` builds the stacks there with one index.

Ordering. The replay answers one caller's requests in the order they were sent (Ray runs an
actor's calls from one caller in order), and the caller handles answers in that order:
apply answer k's delta, gather answer k, then answer k+1. So when answer k is gathered the
mirror holds exactly the frames the shard held when it drew k: every frame k names (it was
stored then, so it came in answer k's delta or an earlier one), and none that replaced one
of them afterwards (those come in later deltas). On CUDA the copies into the ring and the
gathers are queued on one stream, in that same order. The mirror checks the claim rather
than trusting it: it records the uid held at each position, and a gather whose uids differ
raises :class:`MirrorError`. A delta that does not continue the previous one (an answer
was lost) puts the mirror out of sync until a ``reset`` delta arrives; :meth:`apply` says so
and the caller asks the shard to resend everything (``ReplayServer.forget_consumer``).

Plain torch and numpy, no Ray (``learner/fleet.py`` makes the calls).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common.messages import FrameDelta, IndexBatch, SampleBatch, decompress_frames


class MirrorError(RuntimeError):
    """A gather named a frame the mirror does not hold: the ordering contract was broken."""


def mirror_bytes(capacity: int, frame_shape: tuple[int, ...], frame_dtype: str) -> int:
    """Device memory of a mirror of ``capacity`` frames."""
    return int(capacity) * math.prod(frame_shape) * np.dtype(frame_dtype).itemsize


class FrameMirror:
    """The frame ring of one replay shard of ``capacity`` records, on ``device``.

    The ring (``dtype[capacity, *frame_shape]``) is allocated from the first delta that
    carries frames, so its shape and dtype are the shard's own.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.ring: torch.Tensor | None = None
        self.spec: tuple[str, tuple[int, ...], str] | None = None  # codec, shape, dtype
        self.held = np.full(self.capacity, -1, dtype=np.int64)  # uid at each position; -1: none
        self.in_sync = False  # until the first reset delta
        self.resync_requested = False  # the caller's note that it asked the shard for a reset
        self.epoch = -1
        self.next_uid = -1
        self.frames_applied = 0
        self._stage: torch.Tensor | None = None  # pinned host buffer for CUDA copies
        self._stage_free = None  # CUDA event: the last copy out of the stage has finished

    # ---- deltas --------------------------------------------------------------------------
    def apply(self, delta: FrameDelta) -> bool:
        """Write the delta's frames into the ring; True when the mirror is in sync after it.

        False: this delta does not continue the last one (an answer was lost) or the
        mirror already waits for a reset; its frames are dropped, and so are those of every
        delta until one with ``reset`` comes.
        """
        if delta.reset:
            self.held.fill(-1)
            self.epoch, self.next_uid, self.in_sync, self.resync_requested = delta.epoch, delta.first_uid, True, False
        elif not self.in_sync or delta.epoch != self.epoch or delta.since_uid != self.next_uid:
            self.in_sync = False
            return False
        if len(delta):
            self._write(delta)
        self.next_uid = delta.end_uid
        return True

    def _write(self, delta: FrameDelta) -> None:
        spec = (delta.codec, tuple(delta.frame_shape), delta.frame_dtype)
        if spec != self.spec:
            self._allocate(spec)
        k, lo = len(delta), delta.first_uid
        if k > self.capacity or int(delta.positions[0]) != lo % self.capacity:
            raise MirrorError(f"delta of {k} frames from uid {lo} does not fit a ring of {self.capacity}")
        mv, off = memoryview(delta.blobs), delta.offsets.tolist()
        frames = decompress_frames([mv[off[i] : off[i + 1]] for i in range(k)], *spec)  # read-only numpy
        p0 = lo % self.capacity
        n1 = min(k, self.capacity - p0)  # the uids are consecutive: at most two runs of the ring
        if self.device.type == "cpu":
            ring = self.ring.numpy()
            ring[p0 : p0 + n1] = frames[:n1]
            ring[: k - n1] = frames[n1:]
        else:
            src = self._staged(frames)
            self.ring[p0 : p0 + n1].copy_(src[:n1], non_blocking=True)
            if n1 < k:
                self.ring[: k - n1].copy_(src[n1:], non_blocking=True)
            self._stage_free.record()
        self.held[delta.positions] = np.arange(lo, lo + k, dtype=np.int64)
        self.frames_applied += k

    def _allocate(self, spec: tuple[str, tuple[int, ...], str]) -> None:
        _codec, shape, dtype = spec
        self.ring = torch.empty((self.capacity, *shape), dtype=_torch_dtype(dtype), device=self.device)
        self.spec = spec
        self.held.fill(-1)

    def _staged(self, frames: np.ndarray) -> torch.Tensor:
        """``frames`` in pinned host memory, for an asynchronous copy to the device. The
        buffer is reused once its previous copy has finished, and grows as needed."""
        k = frames.shape[0]
        if self._stage is None or self._stage.shape[0] < k or tuple(self._stage.shape[1:]) != frames.shape[1:]:
            rows = max(k, 256 if self._stage is None else 2 * self._stage.shape[0])
            self._stage = torch.empty((rows, *frames.shape[1:]), dtype=self.ring.dtype, pin_memory=True)
            self._stage_free = torch.cuda.Event()
        else:
            self._stage_free.synchronize()
        self._stage.numpy()[:k] = frames
        return self._stage[:k]

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
