"""The replay's frames: each kept once, as the compressed bytes that arrived, at ``uid % capacity``.

A frame is decompressed only when a sample needs it (the stacked feed) and is sent as it
arrived to a learner's mirror (``replay_server.mirror_protocol``). ``nbytes``, the
compressed bytes held, is what the replay's memory should follow. Plain Python and numpy.
"""

from __future__ import annotations

import numpy as np

from common.messages import MessageError, decompress_frames

#: Frames decompressed per call at sample time (see FrameStore.frames).
DECOMPRESS_CHUNK = 128


def blob_bytes(blobs) -> int:
    """Bytes of a list of blobs (None: an empty slot)."""
    return sum(len(b) for b in blobs if b is not None)


class FrameStore:
    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.blobs: list[bytes | None] = [None] * self.capacity
        self.nbytes = 0
        self.spec: tuple[str, tuple[int, ...], str] | None = None  # codec, shape, dtype

    def check(self, spec: tuple[str, tuple[int, ...], str]) -> None:
        """MessageError unless frames of ``spec`` (codec, shape, dtype) fit the ones stored."""
        if self.spec is not None and spec != self.spec:
            raise MessageError(f"frames are {spec} (codec, shape, dtype) but this buffer stores {self.spec}")

    def write(self, first_uid: int, blobs: list[bytes]) -> None:
        """Store the frames of the consecutive uids from ``first_uid`` (at most ``capacity``)."""
        cap, m, s0 = self.capacity, len(blobs), first_uid % self.capacity
        if s0 + m <= cap:
            self.nbytes += blob_bytes(blobs) - blob_bytes(self.blobs[s0 : s0 + m])
            self.blobs[s0 : s0 + m] = blobs
        else:
            split = cap - s0
            self.nbytes += blob_bytes(blobs) - blob_bytes(self.blobs[s0:]) - blob_bytes(self.blobs[: m - split])
            self.blobs[s0:] = blobs[:split]
            self.blobs[: m - split] = blobs[split:]

    def between(self, lo: int, hi: int) -> list[bytes]:
        """The compressed frames of the stored uids ``[lo, hi)``, oldest first."""
        cap, n, s0 = self.capacity, hi - lo, lo % self.capacity
        return self.blobs[s0 : s0 + n] if s0 + n <= cap else self.blobs[s0:] + self.blobs[: s0 + n - cap]

    def frames(self, uids: np.ndarray) -> np.ndarray:
        """The frames ``dtype[K, *shape]`` of stored uids ``int64[K]``; each distinct one is
        decompressed once."""
        codec, shape, dtype = self.spec
        uniq, first, inverse = np.unique(uids, return_index=True, return_inverse=True)
        out = np.empty((uids.size, *shape), dtype=dtype)
        uniq_blobs = [self.blobs[u] for u in (uniq % self.capacity).tolist()]
        # Decompress in chunks: holding thousands of fresh frames at once costs a page fault
        # per frame, while chunk after chunk reuses the same (cache-warm) heap memory.
        for lo in range(0, len(uniq_blobs), DECOMPRESS_CHUNK):
            hi = lo + DECOMPRESS_CHUNK
            out[first[lo:hi]] = decompress_frames(uniq_blobs[lo:hi], codec, shape, dtype)
        repeat = np.flatnonzero(first[inverse] != np.arange(uids.size))
        out[repeat] = out[first[inverse[repeat]]]
        return out

    def load(self, blobs: list[bytes | None], spec) -> None:
        """Become a store holding ``blobs`` (one per slot) of frames ``spec`` (checked by the caller)."""
        self.blobs, self.spec, self.nbytes = blobs, spec, blob_bytes(blobs)
