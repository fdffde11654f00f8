"""A replay buffer's whole state as a snapshot tree, and the checks that read one back.

:func:`encode_state` builds the tree that ``replay_server.snapshot.write_snapshot`` writes;
:func:`decode_state` checks a tree read back against the buffer it is loaded into and
converts it, raising :class:`SnapshotError` for anything out of place, so that a load
either succeeds whole or changes nothing. The slot arrays come from the one table in
``replay_server.slots``.

Compatible reading: snapshots written before ids carried an epoch lack ``counters.epoch``,
``counters.priority_updates_ignored`` and ``slots.epoch``; they read as 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.messages import CODECS, FRAME_DTYPES
from replay_server.accumulator import StreamState
from replay_server.slots import SLOT_FIELDS, slot_shape
from replay_server.snapshot import BlobList, SnapshotError

#: Settings a snapshot must share with the buffer it is loaded into.
CONFIG_FIELDS = ("capacity", "stack_size", "n_step", "gamma", "prioritized", "alpha", "priority_eps")
#: Counters of a buffer; those added after the first snapshot format default to 0.
COUNTERS = ("records_added", "items_dropped", "records_lost", "epoch", "priority_updates_ignored")
_NEWER_FIELDS = ("epoch", "priority_updates_ignored")
#: Bit generators a snapshot may name (numpy's own; default_rng uses PCG64).
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "SFC64", "Philox", "MT19937")


@dataclasses.dataclass
class DecodedState:
    """A checked snapshot tree, converted to what a ReplayBuffer holds."""

    slots: dict  # name -> array, as ``allocate_slots`` makes them
    leaves: np.ndarray  # float64[capacity], the sampler's tree leaves
    blobs: list  # bytes | None per slot
    frame_spec: tuple | None  # (codec, shape, dtype)
    streams: dict  # stream id -> StreamState
    counters: dict  # COUNTERS -> int, plus max_priority -> float
    rng: np.random.Generator


def encode_state(
    config: dict,
    frame_spec,
    counters: dict,
    rng: np.random.Generator,
    slots: dict,
    leaves: np.ndarray,
    blobs: list,
    streams: dict,
) -> dict:
    """The state tree. Arrays are the live ones, not copies: write it out before the buffer changes."""
    items = list(streams.items())
    k = len(items)
    pending = [st.pending for _, st in items]
    return {
        "config": dict(config),
        "frame_spec": None
        if frame_spec is None
        else {"codec": frame_spec[0], "shape": list(frame_spec[1]), "dtype": frame_spec[2]},
        "counters": dict(counters),
        "rng": _encode_rng_state(rng.bit_generator.state),
        "slots": dict(slots),
        "tree_leaves": leaves,
        "blobs": BlobList(blobs),
        "streams": {
            "stream_id": np.fromiter((sid for sid, _ in items), np.int64, k),
            "last_uid": np.fromiter((st.last_uid for _, st in items), np.int64, k),
            "last_final": np.fromiter((st.last_final for _, st in items), np.bool_, k),
            "last_ended": np.fromiter((st.last_ended for _, st in items), np.bool_, k),
            "last_stack": np.stack([st.last_stack for _, st in items])
            if k
            else np.zeros((0, config["stack_size"]), np.int64),
            "pending_len": np.fromiter((p.size for p in pending), np.int64, k),
            "next_seq": np.fromiter((st.next_seq for _, st in items), np.int64, k),
            "pending": np.concatenate(pending) if k else np.zeros(0, np.int64),
        },
    }


def decode_state(state: dict, config: dict, frame_spec_now) -> DecodedState:
    """``state`` checked against a buffer with ``config`` that stores ``frame_spec_now``.

    SnapshotError for any defect, including a malformed tree (missing keys, wrong types).
    """
    try:
        return _decode(state, config, frame_spec_now)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SnapshotError(f"malformed replay state: {type(e).__name__}: {e}") from None


def _decode(state: dict, config: dict, frame_spec_now) -> DecodedState:
    for name in CONFIG_FIELDS:
        theirs, ours = state["config"][name], config[name]
        if theirs != ours or type(theirs) is not type(ours):
            raise SnapshotError(f"snapshot was taken with {name}={theirs!r} but this replay has {name}={ours!r}")
    spec = _check_frame_spec(state["frame_spec"], frame_spec_now)
    counters = _check_counters(state["counters"])
    cap, s = config["capacity"], config["stack_size"]
    slots = _check_slots(state["slots"], cap, s, counters["epoch"])
    leaves = checked_array(state, "tree_leaves", np.float64, (cap,))
    if not (np.all(np.isfinite(leaves)) and np.all(leaves >= 0)):
        raise SnapshotError("snapshot priorities are not all finite and >= 0")
    blobs = state["blobs"]
    if not isinstance(blobs, list) or len(blobs) != cap or not all(b is None or isinstance(b, bytes) for b in blobs):
        raise SnapshotError(f"snapshot frame blobs are not {cap} bytes-or-None")
    if spec is None and counters["records_added"] > 0:
        raise SnapshotError("snapshot holds records but no frame format")
    streams = _check_streams(state["streams"], slots, config, counters["records_added"])
    return DecodedState(
        slots=slots,
        leaves=leaves,
        blobs=blobs,
        frame_spec=spec,
        streams=streams,
        counters=counters,
        rng=_decode_rng(state["rng"]),
    )


def _check_frame_spec(spec, frame_spec_now):
    if spec is None:
        return None
    codec, shape, dtype = spec["codec"], spec["shape"], spec["dtype"]
    if (
        codec not in CODECS
        or dtype not in FRAME_DTYPES
        or not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and d > 0 for d in shape)
    ):
        raise SnapshotError(f"snapshot frame format {spec!r} is not valid")
    spec = (codec, tuple(shape), dtype)
    if frame_spec_now is not None and spec != frame_spec_now:
        raise SnapshotError(
            f"snapshot holds frames {spec} (codec, shape, dtype) but this replay stores {frame_spec_now}"
        )
    return spec


def _check_counters(counters: dict) -> dict:
    out = {name: counters[name] if name in counters or name not in _NEWER_FIELDS else 0 for name in COUNTERS}
    max_priority = counters["max_priority"]
    if not (
        all(_is_count(v) for v in out.values())
        and isinstance(max_priority, float)
        and np.isfinite(max_priority)
        and max_priority > 0
    ):
        raise SnapshotError(f"snapshot counters {counters!r} are not valid")
    out["max_priority"] = max_priority
    return out


def _check_slots(parent: dict, capacity: int, stack_size: int, epoch: int) -> dict:
    slots = {}
    for name, dtype, trail, fill in SLOT_FIELDS:
        if name == "epoch" and name not in parent:  # a snapshot from before epochs: all 0
            slots[name] = np.full(capacity, fill, dtype=dtype)
            continue
        slots[name] = checked_array(parent, name, dtype, slot_shape(trail, capacity, stack_size))
    if np.any(slots["epoch"] < 0) or np.any(slots["epoch"] > epoch):
        raise SnapshotError("snapshot slot epochs lie outside 0..epoch")
    return slots


def _check_streams(st: dict, slots: dict, config: dict, records_added: int) -> dict:
    s, n = config["stack_size"], config["n_step"]
    sids = checked_array(st, "stream_id", np.int64, None)
    k = sids.size
    last_uid = checked_array(st, "last_uid", np.int64, (k,))
    last_final = checked_array(st, "last_final", np.bool_, (k,))
    last_ended = checked_array(st, "last_ended", np.bool_, (k,))
    last_stack = checked_array(st, "last_stack", np.int64, (k, s))
    pending_len = checked_array(st, "pending_len", np.int64, (k,))
    next_seq = checked_array(st, "next_seq", np.int64, (k,))
    pending = checked_array(st, "pending", np.int64, None)
    if (
        pending.ndim != 1
        or np.any(pending_len < 0)
        or np.any(pending_len > n)
        or int(pending_len.sum()) != pending.size
        or np.unique(sids).size != k
    ):
        raise SnapshotError("snapshot stream states are inconsistent")
    if np.any(next_seq < 0):
        raise SnapshotError("snapshot stream states have a negative next_seq")
    if np.any(last_uid >= records_added) or np.any(pending >= records_added) or np.any(pending < 0):
        raise SnapshotError("snapshot stream states refer to records never added")
    # Pending rewards live in the slots (an evicted pending record's are never read).
    cap = config["capacity"]
    rewards, terminated = slots["reward"][pending % cap], slots["terminated"][pending % cap]
    bounds = np.concatenate([[0], np.cumsum(pending_len)])
    streams = {}
    for i in range(k):
        part = slice(bounds[i], bounds[i + 1])
        streams[int(sids[i])] = StreamState(
            last_uid=int(last_uid[i]),
            last_final=bool(last_final[i]),
            last_ended=bool(last_ended[i]),
            last_stack=last_stack[i].copy(),
            pending=pending[part].copy(),
            pending_rewards=rewards[part],
            pending_terminated=terminated[part],
            next_seq=int(next_seq[i]),
        )
    return streams


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def checked_array(parent: dict, name: str, dtype, shape) -> np.ndarray:
    """``parent[name]`` if it is an ndarray of ``dtype`` and ``shape`` (None: any), made writable."""
    arr = parent[name]
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dtype) or (shape is not None and arr.shape != shape):
        got = f"{arr.dtype}{list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
        want = f"{np.dtype(dtype)}{list(shape) if shape is not None else '[...]'}"
        raise SnapshotError(f"snapshot array {name}: expected {want}, got {got}")
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr


def _encode_rng_state(node):
    """A bit generator's state with its 128-bit ints as hex strings (msgpack stops at 64 bits)."""
    if isinstance(node, dict):
        return {k: _encode_rng_state(v) for k, v in node.items()}
    if isinstance(node, int) and not isinstance(node, bool):
        return {"int": hex(node)}
    return node


def _decode_rng_state(node):
    if isinstance(node, dict):
        if set(node) == {"int"}:
            return int(node["int"], 16)
        return {k: _decode_rng_state(v) for k, v in node.items()}
    return node


def _decode_rng(encoded) -> np.random.Generator:
    state = _decode_rng_state(encoded)
    name = state["bit_generator"]
    if name not in _BIT_GENERATORS:
        raise SnapshotError(f"snapshot rng {name!r} is not one of {_BIT_GENERATORS}")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
