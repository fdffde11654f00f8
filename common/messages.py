"""Messages that cross process boundaries: versioned schemas, encoded in one place.

Actor -> replay: :class:`StepBatch`, encoded with msgpack (never pickle: nothing on the
data path is unpickled from an actor's message), frames compressed one by one so the
replay can store each frame's bytes as they arrived.

Replay -> learner: :class:`SampleBatch`, a dataclass of numpy arrays. It travels between
our own trusted processes through Ray's object store (zero-copy for the arrays). Or, where
the learner mirrors the replay's frames on its device, :class:`IndexBatch`: the same batch
as frame uids, with a :class:`FrameDelta` of the frames stored since the last answer
(each frame crosses once); a dataclass of numpy arrays too, the frames' bytes in one array.

The stream grammar of a StepBatch (one env stream, records in time order):

* each record is one observation ``frame`` plus the transition that leaves it:
  ``action`` taken there, the (clipped) ``reward`` that followed, and whether the
  episode then ``terminated`` or was ``truncated``;
* a record with ``first=True`` starts a new episode segment (frame stacks never reach
  back past it);
* right after a record with ``terminated`` or ``truncated``, the stream holds one
  *final-frame* record: the observation the episode ended on, ``action == -1``, reward 0,
  no flags. Truncated transitions bootstrap from it; terminated ones do not need it but
  the grammar stays uniform. The next record then has ``first=True``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import lz4.block
import msgpack
import numpy as np

STEP_BATCH_VERSION = 2  # 2: seq, so the replay can tell a gap in a stream
#: Largest number of records one StepBatch may carry; anything above is treated as corrupt.
MAX_RECORDS = 65_536
#: Largest number of elements of one frame (84*84 images, or small flat vectors).
MAX_FRAME_ELEMENTS = 1 << 20
CODECS = ("lz4", "raw")
FRAME_DTYPES = ("uint8", "float32")
NO_ACTION = -1


class MessageError(ValueError):
    """A message that does not follow its schema. The text names the problem."""


def compress_frame(frame: np.ndarray, codec: str) -> bytes:
    """Bytes of one frame, compressed with ``codec`` ("lz4" for images, "raw" for vectors)."""
    data = np.ascontiguousarray(frame).tobytes()
    if codec == "lz4":
        return lz4.block.compress(data, store_size=False)
    if codec == "raw":
        return data
    raise MessageError(f"unknown frame codec {codec!r}; expected one of {CODECS}")


def decompress_frames(blobs: Sequence[bytes], codec: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Frames ``dtype[len(blobs), *shape]`` from their compressed bytes; MessageError if corrupt."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        if codec == "lz4":
            raw = b"".join(lz4.block.decompress(b, uncompressed_size=nbytes) for b in blobs)
        else:
            raw = b"".join(blobs)
    except lz4.block.LZ4BlockError as e:
        raise MessageError(f"corrupt {codec} frame bytes: {e}") from None
    if len(raw) != nbytes * len(blobs):
        raise MessageError(f"frame bytes have the wrong size: {len(raw)} for {len(blobs)} frames of {nbytes}")
    return np.frombuffer(raw, dtype=dtype).reshape((len(blobs), *shape))


def check_frame_blobs(blobs: Sequence[bytes], codec: str, shape: tuple[int, ...], dtype: str) -> None:
    """MessageError unless every blob decompresses to exactly one frame.

    Frame by frame, each dropped at once: a message never costs more than one frame of
    memory to check (LZ4 expands up to 255x, so keeping them could be a memory bomb).
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    try:
        for i, blob in enumerate(blobs):
            size = len(lz4.block.decompress(blob, uncompressed_size=nbytes)) if codec == "lz4" else len(blob)
            if size != nbytes:
                raise MessageError(
                    f"frame bytes have the wrong size: frame {i} has {size}, a frame of {list(shape)} {dtype} {nbytes}"
                )
    except lz4.block.LZ4BlockError as e:
        raise MessageError(f"corrupt {codec} frame bytes: {e}") from None


@dataclasses.dataclass(frozen=True)
class StepBatch:
    """T consecutive records of one environment stream (see the module docstring).

    ``frame_blobs`` holds T compressed frames of ``frame_dtype[*frame_shape]`` (for Atari
    one ``uint8[84, 84]`` frame: the newest of the stack, never the stack).
    """

    stream_id: int
    frame_shape: tuple[int, ...]
    frame_dtype: str
    codec: str
    frame_blobs: tuple[bytes, ...]
    actions: np.ndarray  # int32[T]; NO_ACTION on final-frame records
    rewards: np.ndarray  # float32[T], clipped for learning
    terminated: np.ndarray  # bool[T]
    truncated: np.ndarray  # bool[T]
    first: np.ndarray  # bool[T]
    policy_version: np.ndarray  # int64[T], the weights' version that chose the action
    priorities: np.ndarray | None = None  # float32[T], optional initial priorities
    #: position in its stream of this batch's first record (records the stream sent before).
    #: A replay that finds a gap (it restarted from a snapshot, messages were lost) starts
    #: a new segment there instead of splicing records that are not consecutive.
    seq: int = 0

    def __len__(self) -> int:
        return len(self.frame_blobs)

    @classmethod
    def from_frames(cls, stream_id: int, frames: np.ndarray, codec: str, **fields) -> "StepBatch":
        """Compress ``frames[T, ...]`` and build a validated batch."""
        frames = np.asarray(frames)
        batch = cls(
            stream_id=int(stream_id),
            frame_shape=tuple(int(d) for d in frames.shape[1:]),
            frame_dtype=str(frames.dtype),
            codec=codec,
            frame_blobs=tuple(compress_frame(f, codec) for f in frames),
            **fields,
        )
        batch.validate(check_frames=False)
        return batch

    def frames(self) -> np.ndarray:
        return decompress_frames(self.frame_blobs, self.codec, self.frame_shape, self.frame_dtype)

    def validate(self, check_frames: bool = True) -> None:
        """Raise MessageError naming the first field that breaks the schema."""
        t = len(self.frame_blobs)
        if not 0 < t <= MAX_RECORDS:
            raise MessageError(f"record count {t} outside 1..{MAX_RECORDS}")
        if self.codec not in CODECS:
            raise MessageError(f"unknown frame codec {self.codec!r}")
        if self.frame_dtype not in FRAME_DTYPES:
            raise MessageError(f"frame dtype {self.frame_dtype!r} not in {FRAME_DTYPES}")
        # math.prod: exact on Python ints, where np.prod wraps around (2**32 * 2**32 == 0 in int64).
        if (
            not self.frame_shape
            or any(d <= 0 for d in self.frame_shape)
            or math.prod(self.frame_shape) > MAX_FRAME_ELEMENTS
        ):
            raise MessageError(f"bad frame shape {self.frame_shape}")
        if not 0 <= self.stream_id < 2**62:
            raise MessageError(f"stream_id {self.stream_id} out of range")
        if not 0 <= self.seq < 2**62:
            raise MessageError(f"seq {self.seq} out of range")
        for name, dtype in _ARRAY_FIELDS.items():
            arr = getattr(self, name)
            if arr is None and name == "priorities":
                continue
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != (t,):
                got = f"{arr.dtype}{list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise MessageError(f"field {name}: expected {np.dtype(dtype)}[{t}], got {got}")
        if np.any(self.actions < NO_ACTION):
            raise MessageError("field actions: negative action other than -1")
        if not np.all(np.isfinite(self.rewards)):
            raise MessageError("field rewards: not finite")
        if self.priorities is not None and not (np.all(np.isfinite(self.priorities)) and np.all(self.priorities >= 0)):
            raise MessageError("field priorities: must be finite and >= 0")
        final = self.actions == NO_ACTION
        if np.any(final & (self.terminated | self.truncated | (self.rewards != 0))):
            raise MessageError("a final-frame record (action -1) carries a reward or an end flag")
        ended = self.terminated | self.truncated
        if np.any(ended[:-1] & ~final[1:]):
            raise MessageError("an episode end is not followed by its final-frame record")
        if np.any(final[:-1] & ~self.first[1:]):
            raise MessageError("a final-frame record is not followed by a first record")
        if check_frames:
            check_frame_blobs(self.frame_blobs, self.codec, self.frame_shape, self.frame_dtype)


_ARRAY_FIELDS = {
    "actions": np.int32,
    "rewards": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "first": np.bool_,
    "policy_version": np.int64,
    "priorities": np.float32,
}


def encode_step_batch(batch: StepBatch) -> bytes:
    """The msgpack envelope of a StepBatch."""
    body = {
        "v": STEP_BATCH_VERSION,
        "stream_id": batch.stream_id,
        "seq": batch.seq,
        "frame_shape": list(batch.frame_shape),
        "frame_dtype": batch.frame_dtype,
        "codec": batch.codec,
        "frames": list(batch.frame_blobs),
    }
    for name in _ARRAY_FIELDS:
        arr = getattr(batch, name)
        body[name] = None if arr is None else np.ascontiguousarray(arr).tobytes()
    return msgpack.packb(body, use_bin_type=True)


def decode_step_batch(data: bytes, check_frames: bool = True) -> StepBatch:
    """A validated StepBatch from its envelope; MessageError names what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError(f"step batch must be bytes, got {type(data).__name__}")
    try:
        body = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=1 << 28, max_array_len=MAX_RECORDS + 16
        )
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise MessageError(f"not a msgpack step batch: {type(e).__name__}: {e}") from None
    if not isinstance(body, dict):
        raise MessageError("step batch envelope is not a map")
    if body.get("v") != STEP_BATCH_VERSION:
        raise MessageError(f"step batch schema version {body.get('v')!r}, expected {STEP_BATCH_VERSION}")
    try:
        frames = body["frames"]
        if not isinstance(frames, list) or not all(isinstance(b, bytes) for b in frames):
            raise MessageError("field frames: expected a list of bytes")
        t = len(frames)
        arrays = {}
        for name, dtype in _ARRAY_FIELDS.items():
            raw = body[name]
            if raw is None and name == "priorities":
                arrays[name] = None
                continue
            if not isinstance(raw, bytes) or len(raw) != t * np.dtype(dtype).itemsize:
                raise MessageError(f"field {name}: expected {t} values of {np.dtype(dtype)}")
            arrays[name] = np.frombuffer(raw, dtype=dtype)
        shape = body["frame_shape"]
        if not isinstance(shape, list) or not all(type(d) is int for d in shape):  # not bool either
            raise MessageError(f"field frame_shape: expected a list of ints, got {shape!r}")
        if (
            not isinstance(body["stream_id"], int)
            or not isinstance(body["frame_dtype"], str)
            or not isinstance(body["codec"], str)
        ):
            raise MessageError("fields stream_id, frame_dtype, codec: wrong types")
        if type(body["seq"]) is not int:
            raise MessageError(f"field seq: expected an int, got {type(body['seq']).__name__}")
        batch = StepBatch(
            stream_id=body["stream_id"],
            seq=body["seq"],
            frame_shape=tuple(shape),
            frame_dtype=body["frame_dtype"],
            codec=body["codec"],
            frame_blobs=tuple(frames),
            **arrays,
        )
    except KeyError as e:
        raise MessageError(f"step batch lacks field {e.args[0]!r}") from None
    batch.validate(check_frames=check_frames)
    return batch


@dataclasses.dataclass
class SampleBatch:
    """One training batch (replay -> learner). The learner never needs n or episode ends.

    ids: int64[B] replay item ids (for priority updates)
    obs, next_obs: uint8[B, S, 84, 84] (Atari, S=4) or float32[B, 1, D] (flat vectors)
    actions: int64[B]
    returns: float32[B], the n-step return sum_{j<k} gamma^j r_{t+j}
    discounts: float32[B], gamma^k * (1 - terminated)
    weights: float32[B], importance-sampling weights (1 for uniform sampling)
    """

    ids: np.ndarray
    obs: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    discounts: np.ndarray
    next_obs: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


# ---- the mirror feed: replay -> learner as slot indices, each frame sent once ---------------

INDEX_BATCH_VERSION = 1


@dataclasses.dataclass
class FrameDelta:
    """Frames a replay shard stored since its previous answer to this consumer, oldest first,
    each one once, as the compressed bytes that arrived (see ``learner/mirror.py``).

    It covers the uids ``[first_uid, end_uid)`` of the shard's epoch ``epoch`` (the older
    ones of those evicted are left out: no sample can name them); frame ``i`` is uid
    ``first_uid + i``, goes to ring position ``positions[i]`` (its ``uid % capacity``) and its
    bytes are ``blobs[offsets[i]:offsets[i + 1]]``. ``since_uid`` is where the previous delta
    to this consumer ended, so a mirror can tell that one was lost. ``reset``: the mirror must
    forget what it holds (a new consumer, or the shard restarted or restored a snapshot):
    this delta then carries every stored frame (``since_uid`` -1).

    positions: int32[K]; offsets: int64[K + 1]; blobs: uint8[offsets[-1]]
    """

    epoch: int
    since_uid: int
    first_uid: int
    end_uid: int
    reset: bool
    codec: str
    frame_shape: tuple[int, ...]
    frame_dtype: str
    positions: np.ndarray
    offsets: np.ndarray
    blobs: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def nbytes(self) -> int:
        return self.positions.nbytes + self.offsets.nbytes + self.blobs.nbytes


@dataclasses.dataclass
class IndexBatch:
    """A sample as ring positions (replay -> learner, the mirror feed): kilobytes, not frames.

    ``delta`` always comes first: the learner applies it to its mirror of the shard's frame
    ring and only then gathers ``obs_uids`` and ``next_uids``: the uids of the frames of
    each stack (frame ``u`` sits at ring position ``u % capacity``), so the mirror can
    check that it holds exactly those frames. ``ids`` is None when the shard had no batch
    to give (rate limiter, too few items, or the delta is still catching up): the delta
    must be applied all the same.

    ids: int64[B]; obs_uids, next_uids: int64[B, S] frame uids, oldest frame first;
    actions: int64[B]; returns, discounts, weights: float32[B] (as in SampleBatch)
    """

    delta: FrameDelta
    ids: np.ndarray | None = None
    obs_uids: np.ndarray | None = None
    next_uids: np.ndarray | None = None
    actions: np.ndarray | None = None
    returns: np.ndarray | None = None
    discounts: np.ndarray | None = None
    weights: np.ndarray | None = None
    version: int = INDEX_BATCH_VERSION

    @property
    def has_batch(self) -> bool:
        return self.ids is not None

    def __len__(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays: what crosses Ray (plus a few hundred bytes of envelope)."""
        arrays = (self.ids, self.obs_uids, self.next_uids, self.actions, self.returns, self.discounts, self.weights)
        return self.delta.nbytes + sum(a.nbytes for a in arrays if a is not None)

    def validate(self) -> None:
        """MessageError naming the first field that breaks the schema."""
        if self.version != INDEX_BATCH_VERSION:
            raise MessageError(f"index batch schema version {self.version!r}, expected {INDEX_BATCH_VERSION}")
        d = self.delta
        k = len(d.positions)
        if d.positions.dtype != np.int32 or d.offsets.dtype != np.int64 or d.offsets.shape != (k + 1,):
            raise MessageError("frame delta: positions must be int32[K] and offsets int64[K + 1]")
        if (
            d.blobs.dtype != np.uint8
            or d.blobs.ndim != 1
            or (k and (d.offsets[0] != 0 or d.offsets[-1] != d.blobs.size))
        ):
            raise MessageError("frame delta: blobs must be uint8[offsets[-1]]")
        if self.ids is None:
            return
        b = len(self.ids)
        for name, dtype, ndim in (
            ("ids", np.int64, 1),
            ("obs_uids", np.int64, 2),
            ("next_uids", np.int64, 2),
            ("actions", np.int64, 1),
            ("returns", np.float32, 1),
            ("discounts", np.float32, 1),
            ("weights", np.float32, 1),
        ):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != ndim or arr.shape[0] != b:
                raise MessageError(f"field {name}: expected {np.dtype(dtype)} with {ndim} dims and {b} rows")
