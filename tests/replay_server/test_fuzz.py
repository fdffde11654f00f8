"""Property-based tests of the replay's front door: whatever bytes arrive, decode either
returns a valid StepBatch or raises MessageError, and ``ReplayServer.add`` never raises,
and a message it rejects is counted and changes nothing else.

Messages start as valid encoded StepBatches and are then mutated: cut short, bytes
flipped, envelope fields replaced by values of the wrong type, size, version or dtype,
absurd shapes, broken frame bytes, and stream-grammar violations in the flag arrays.

``FUZZ_EXAMPLES=2000 pytest tests/replay_server/test_fuzz.py`` searches longer than the
default (100 examples per property, a few seconds).
"""

import copy
import os

import lz4.block
import msgpack
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common.messages import NO_ACTION, MessageError, StepBatch, decode_step_batch, encode_step_batch
from replay_server.remote import ReplayServer
from tests.support.fakes import assert_same_state, step_batch

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 100)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
FIELDS = (
    "v",
    "stream_id",
    "frame_shape",
    "frame_dtype",
    "codec",
    "frames",
    "actions",
    "rewards",
    "terminated",
    "truncated",
    "first",
    "policy_version",
    "priorities",
)
FLAG_FIELDS = ("actions", "terminated", "truncated", "first")
BIG = st.integers(min_value=-(2**63), max_value=2**64 - 1)


# --------------------------------------------------------------------------- valid messages


#: records the preloaded server already holds per stream: a continuing batch's seq
PRELOADED = {1: 10, 2: 3}


@st.composite
def valid_batches(draw):
    """A grammatical StepBatch for stream 1 (open in the preloaded server, so it may
    continue), stream 2 (ended: its next record must be the final frame) or a new stream."""
    stream_id = draw(st.sampled_from([1, 2, 3, 7]))
    if stream_id == 2:
        recs, continuing = [(NO_ACTION, 0.0, False, False, False)], True
    else:
        continuing = stream_id == 1 and draw(st.booleans())
        recs = []
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(0, 5),
                st.sampled_from([-1.0, 0.0, 1.0]),
                st.sampled_from([None, None, None, "term", "trunc"]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    for i, (action, reward, end) in enumerate(steps):
        first = (i == 0 and not continuing and not recs) or (bool(recs) and recs[-1][0] == NO_ACTION)
        recs.append((action, reward, end == "term", end == "trunc", first))
        if end is not None:
            recs.append((NO_ACTION, 0.0, False, False, False))
    prio = draw(st.none() | st.lists(st.floats(0, 10, width=32), min_size=len(recs), max_size=len(recs)))
    return step_batch(stream_id, recs, priorities=prio, seq=PRELOADED.get(stream_id, 0))


def preloaded_server():
    """A small server holding data: stream 1 mid-episode, stream 2 ended without its final frame."""
    server = ReplayServer(capacity=32, stack_size=4, n_step=3, gamma=0.9, seed=0, min_size=1)
    step = (0, 1.0, False, False, False)
    assert server.add(encode_step_batch(step_batch(1, [(0, 1.0, False, False, True)] + [step] * 9)))
    assert server.add(
        encode_step_batch(step_batch(2, [(0, 1.0, False, False, True), step, (1, 0.0, True, False, False)]))
    )
    return server


# --------------------------------------------------------------------------- mutations

weird_values = st.one_of(
    st.none(),
    st.booleans(),
    BIG,
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.lists(BIG, max_size=4),
    st.lists(st.binary(max_size=12), max_size=4),
    st.dictionaries(st.text(max_size=3), BIG, max_size=2),
)
absurd = {
    "v": st.sampled_from([0, 2, -1, "1", 1.5, None, 2**64 - 1]),
    "stream_id": st.sampled_from([-1, 2**62, 2**64 - 1, -(2**63), 1.0, "1", None]),
    "frame_shape": st.sampled_from(
        [
            [],
            [0],
            [-2, 2],
            [2**32, 2**32],
            [2**62, 4],
            [2**63, 3],
            [2**40] * 3,
            [True, True, 4],
            [2, 2.0],
            [84, 84],
            [1 << 21],
            [2, 2, 1],
            [4],
            ["2", 2],
            None,
        ]
    ),
    "frame_dtype": st.sampled_from(
        ["float64", "object", "O", "<U3", "V8", "uint8 ", "UINT8", "float32", "int8", "", None]
    ),
    "codec": st.sampled_from(["zstd", "", "LZ4", "raw", "lz4", None, 4]),
}


def set_field(body, key, value):
    body = dict(body)
    body[key] = value
    return body


@st.composite
def mutated_envelopes(draw):
    """Bytes derived from a valid encoded StepBatch by one or more mutations."""
    batch = draw(valid_batches())
    data = encode_step_batch(batch)
    body = msgpack.unpackb(data, raw=False)
    t = len(batch)
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(
            st.sampled_from(["truncate", "flip", "field", "absurd", "drop", "extra", "flags", "blob", "arrays"])
        )
        if kind == "truncate":
            data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
            return data  # bytes now; later mutations of the body would not apply
        if kind == "flip":
            data = bytearray(data)
            for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4)):
                data[pos] ^= draw(st.integers(1, 255))
            return bytes(data)
        if kind == "field":
            body = set_field(body, draw(st.sampled_from(FIELDS)), draw(weird_values))
        elif kind == "absurd":
            key = draw(st.sampled_from(sorted(absurd)))
            body = set_field(body, key, draw(absurd[key]))
        elif kind == "drop":
            body = dict(body)
            body.pop(draw(st.sampled_from(FIELDS)), None)
        elif kind == "extra":
            body = set_field(body, draw(st.text(min_size=1, max_size=6)), draw(weird_values))
        elif kind == "flags":
            # Grammar violations: flip one flag, or turn an action into -1 or a final frame into a step.
            name = draw(st.sampled_from(FLAG_FIELDS))
            dtype = np.int32 if name == "actions" else np.bool_
            arr = (
                np.frombuffer(body[name], dtype).copy()
                if isinstance(body.get(name), bytes) and len(body[name]) == t * np.dtype(dtype).itemsize
                else np.zeros(t, dtype)
            )
            i = draw(st.integers(0, t - 1))
            arr[i] = draw(st.sampled_from([NO_ACTION, 0, 2, -5, 2**31 - 1])) if name == "actions" else not arr[i]
            body = set_field(body, name, arr.tobytes())
        elif kind == "blob":
            frames = list(body["frames"]) if isinstance(body.get("frames"), list) else []
            if frames and all(isinstance(f, bytes) for f in frames):
                i = draw(st.integers(0, len(frames) - 1))
                frames[i] = draw(st.binary(max_size=24) | st.just(frames[i][:-1]) | st.just(frames[i] + b"\0"))
            body = set_field(body, "frames", frames)
        else:  # arrays: right field, wrong length or dtype width
            name = draw(st.sampled_from(FIELDS[6:]))
            body = set_field(body, name, draw(st.binary(max_size=8 * (t + 2))))
        data = msgpack.packb(body, use_bin_type=True)
    return data


any_message = st.one_of(
    mutated_envelopes(),
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | BIG | st.floats() | st.text(max_size=5) | st.binary(max_size=10),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
        max_leaves=12,
    ).map(lambda x: msgpack.packb(x, use_bin_type=True)),
)


# --------------------------------------------------------------------------- properties


@FUZZ
@given(any_message)
def test_decode_returns_a_valid_batch_or_raises_message_error(data):
    try:
        batch = decode_step_batch(data)
    except MessageError as e:
        assert str(e)
        return
    assert isinstance(batch, StepBatch)
    batch.validate()
    frames = batch.frames()
    assert frames.shape == (len(batch), *batch.frame_shape) and frames.dtype == np.dtype(batch.frame_dtype)
    assert isinstance(batch.stream_id, int) and all(type(d) is int for d in batch.frame_shape)


def observe(server):
    """Everything a caller can see of the server (a sample drawn from a copy of its rng)."""
    buf = server.buffer
    ids = buf.sampleable_ids()
    rng_state = buf.rng.bit_generator.state
    sample = buf.sample(8, beta=0.5)
    buf.rng.bit_generator.state = rng_state
    return server.stats(), ids, copy.deepcopy(buf.state_dict()), rng_state, sample


def assert_unchanged(before, after):
    stats_b, ids_b, state_b, rng_b, sample_b = before
    stats_a, ids_a, state_a, rng_a, sample_a = after
    assert {**stats_a, "rejected": stats_b["rejected"]} == stats_b
    np.testing.assert_array_equal(ids_a, ids_b)
    assert_same_state(state_a, state_b)  # every slot, priority (the tree's leaves), stream and counter
    assert rng_a == rng_b
    for name in ("ids", "obs", "actions", "returns", "discounts", "next_obs", "weights"):
        np.testing.assert_array_equal(getattr(sample_a, name), getattr(sample_b, name))


@FUZZ
@given(any_message)
def test_server_add_never_raises_and_a_rejected_message_changes_nothing(data):
    server = preloaded_server()
    before = observe(server)
    accepted = server.add(data)
    stats = server.stats()
    if accepted:
        assert stats["rejected"] == 0 and stats["batches_added"] == before[0]["batches_added"] + 1
    else:
        assert stats["rejected"] == 1
        assert_unchanged(before, observe(server))


shapes = st.lists(
    st.one_of(st.integers(-2, 90), st.sampled_from([2**31, 2**32, 2**40, 2**62, 2**63, 2**64 - 1]), st.booleans()),
    max_size=4,
)


@FUZZ
@given(
    shape=shapes,
    codec=st.sampled_from(["lz4", "raw"]),
    dtype=st.sampled_from(["uint8", "float32"]),
    blob_size=st.sampled_from([0, 1, 4, 16, 7056]),
    t=st.integers(1, 3),
)
# Found by this test: np.prod wrapped around in int64 (ValueError from reshape, OverflowError
# from lz4), and bools passed for ints (TypeError); all escaped decode as non-MessageErrors.
@example(shape=[2**32, 2**32], codec="lz4", dtype="uint8", blob_size=0, t=1)
@example(shape=[2, 2**62], codec="lz4", dtype="uint8", blob_size=0, t=1)
@example(shape=[True, True, 4], codec="raw", dtype="uint8", blob_size=4, t=2)
def test_any_frame_shape_is_decoded_or_refused(shape, codec, dtype, blob_size, t):
    """Shapes whose element count overflows int64, bools for ints, zero or negative sizes."""
    batch = step_batch(5, [(0, 0.0, False, False, True)] * t)
    body = msgpack.unpackb(encode_step_batch(batch), raw=False)
    blob = bytes(blob_size) if codec == "raw" else lz4.block.compress(bytes(blob_size), store_size=False)
    body.update(frame_shape=shape, codec=codec, frame_dtype=dtype, frames=[blob] * t)
    data = msgpack.packb(body, use_bin_type=True)
    test_decode_returns_a_valid_batch_or_raises_message_error.hypothesis.inner_test(data)
    server = preloaded_server()
    assert server.add(data) == (server.stats()["rejected"] == 0)


@FUZZ
@given(valid_batches())
def test_valid_batches_are_accepted(batch):
    server = preloaded_server()
    assert server.add(encode_step_batch(batch))
    assert server.stats()["records_added"] == 13 + len(batch)


def test_checking_frames_holds_one_frame_at_a_time():
    """64 blobs of 4 MB each (LZ4 shrinks zeros 250x): checking them must not hold 256 MB."""
    import tracemalloc

    batch = step_batch(5, [(0, 0.0, False, False, True)] * 64)
    body = msgpack.unpackb(encode_step_batch(batch), raw=False)
    elements = 1 << 20
    body.update(
        frame_shape=[elements],
        frame_dtype="float32",
        codec="lz4",
        frames=[lz4.block.compress(bytes(4 * elements), store_size=False)] * 64,
    )
    data = msgpack.packb(body, use_bin_type=True)
    tracemalloc.start()
    try:
        assert len(decode_step_batch(data)) == 64
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20
