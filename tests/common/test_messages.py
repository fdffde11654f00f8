import dataclasses

import msgpack
import numpy as np
import pytest

from common.messages import MessageError, decode_step_batch, encode_step_batch
from tests.support.fakes import step_batch


def make_batch(t=5, priorities=False, **over):
    """Frames ``uint8[t, 84, 84]`` and a batch of them; ``over`` replaces field arrays."""
    frames = np.arange(t * 84 * 84, dtype=np.uint64).reshape(t, 84, 84).astype(np.uint8)
    records = [(i % 4, 1.0, False, False, i == 0) for i in range(t)]
    prio = np.linspace(0.1, 1, t).astype(np.float32) if priorities else None
    return frames, step_batch(7, records, frames=frames, priorities=prio, policy_version=3, **over)


@pytest.mark.parametrize("priorities", [False, True])
def test_round_trip_is_exact(priorities):
    frames, batch = make_batch(priorities=priorities)
    back = decode_step_batch(encode_step_batch(batch))
    np.testing.assert_array_equal(back.frames(), frames)
    for name in ("actions", "rewards", "terminated", "truncated", "first", "policy_version"):
        np.testing.assert_array_equal(getattr(back, name), getattr(batch, name))
    assert back.stream_id == 7
    assert (back.priorities is None) == (not priorities)


def test_frames_are_compressed_one_by_one():
    _, batch = make_batch(t=3)
    assert len(batch.frame_blobs) == 3
    blank = step_batch(
        0, [(i % 4, 1.0, False, False, i == 0) for i in range(3)], frames=np.zeros((3, 84, 84), np.uint8)
    )
    assert all(len(b) < 84 * 84 / 20 for b in blank.frame_blobs)


def envelope(batch, **changes):
    body = msgpack.unpackb(encode_step_batch(batch), raw=False)
    body.update(changes)
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(v=1), "schema version"),  # an actor of the previous schema
        (dict(v=3), "schema version"),
        (dict(actions=b"\x00" * 3), "field actions"),
        (dict(frame_dtype="float64"), "frame dtype"),
        (dict(frame_shape=[84, 85]), "frame bytes"),
        (dict(codec="zip"), "codec"),
        (dict(frames=[]), "expected 0 values"),
        (
            dict(frames=[], actions=b"", rewards=b"", terminated=b"", truncated=b"", first=b"", policy_version=b""),
            "record count",
        ),
    ],
)
def test_bad_envelopes_are_rejected_with_a_reason(change, needle):
    _, batch = make_batch()
    with pytest.raises(MessageError, match=needle):
        decode_step_batch(envelope(batch, **change))


def test_corrupt_frame_bytes_and_garbage():
    _, batch = make_batch()
    blobs = list(batch.frame_blobs)
    blobs[2] = blobs[2][: len(blobs[2]) // 2]
    with pytest.raises(MessageError, match="corrupt|size"):
        decode_step_batch(envelope(batch, frames=blobs))
    with pytest.raises(MessageError):
        decode_step_batch(b"\xc1garbage")
    with pytest.raises(MessageError):
        decode_step_batch(msgpack.packb([1, 2, 3]))
    with pytest.raises(MessageError, match="lacks field"):
        body = msgpack.unpackb(encode_step_batch(batch), raw=False)
        del body["rewards"]
        decode_step_batch(msgpack.packb(body, use_bin_type=True))


def test_stream_grammar_is_checked():
    t = 4
    term = np.array([False, True, False, False])
    # the record after an episode end must be its final frame (action -1) ...
    with pytest.raises(MessageError, match="final-frame"):
        make_batch(t=t, terminated=term)
    # ... which carries no reward, and is followed by a first record
    actions = np.array([0, 1, -1, 2], np.int32)
    with pytest.raises(MessageError, match="first record"):
        make_batch(t=t, terminated=term, actions=actions, rewards=np.array([1, 1, 0, 1], np.float32))
    ok_first = np.array([True, False, False, True])
    _, batch = make_batch(
        t=t, terminated=term, actions=actions, rewards=np.array([1, 1, 0, 1], np.float32), first=ok_first
    )
    with pytest.raises(MessageError, match="final-frame"):
        dataclasses.replace(batch, rewards=np.ones(t, np.float32)).validate()
