"""Replay snapshots: exact round trips, damaged files refused, other settings refused, atomic writes."""

import os
import zlib

import msgpack
import numpy as np
import pytest

from common.messages import NO_ACTION, encode_step_batch
from replay_server import snapshot
from replay_server.buffer import ReplayBuffer, id_parts
from replay_server.remote import ReplayServer
from replay_server.snapshot import BlobList, SnapshotError, read_snapshot, write_snapshot
from tests.support.fakes import assert_same_state, step_batch
from tests.support.nstep_cases import episode

CONFIG = dict(capacity=64, stack_size=4, n_step=3, gamma=0.9, seed=3, samples_per_insert=None, min_size=4)


class StreamGen:
    """Records of one actor stream following the grammar: episodes that terminate or
    truncate (each end followed by its final-frame record), and now and then an actor
    restart (a new segment with no end). Frames ``uint8[2, 2]`` hold (stream, step)."""

    def __init__(self, stream_id, rng, flat=False):
        self.sid, self.rng, self.flat = stream_id, rng, flat
        self.step = 0
        self.next_first = True
        self.pending_final = False

    def batch(self, t):
        rng = self.rng
        recs = []
        for _ in range(t):
            self.step += 1
            if self.pending_final:
                recs.append((NO_ACTION, 0.0, False, False, False))
                self.pending_final, self.next_first = False, True
                continue
            first = self.next_first or rng.random() < 0.03  # restart: segment cut without an end
            self.next_first = False
            end = rng.random()
            term, trunc = end < 0.08, 0.08 <= end < 0.12
            recs.append((int(rng.integers(0, 4)), float(rng.integers(-1, 2)), term, trunc, first))
            self.pending_final = term or trunc
        prio = rng.random(t).astype(np.float32) if rng.random() < 0.3 else None
        return encode_step_batch(step_batch(self.sid, recs, start=self.step - t, flat=self.flat, priorities=prio))


def traffic(seed, rounds, flat=False, streams=3):
    """Encoded batches from ``streams`` interleaved streams, random lengths 1..12."""
    rng = np.random.default_rng(seed)
    gens = [StreamGen(10 + i, rng, flat) for i in range(streams)]
    return [gens[int(rng.integers(0, streams))].batch(int(rng.integers(1, 13))) for _ in range(rounds)]


def drive(server, batches, seed):
    """Add ``batches``, sampling and updating priorities in between, plus one bad message."""
    rng = np.random.default_rng(seed)
    for i, data in enumerate(batches):
        assert server.add(data)
        if i % 5 == 4 and server.buffer.num_sampleable >= 8:
            sb = server.sample(8, beta=0.5)
            server.update_priorities(sb.ids, rng.random(8) * 3)
    assert not server.add(b"garbage")


def observe(server):
    """What a caller can see of a server, without changing it (sampling would advance its rng)."""
    buf = server.buffer
    ids = buf.sampleable_ids()
    state = buf.state_dict()
    stats = server.stats()
    stats.pop("heap_trims")  # this process's memory housekeeping (a snapshot trims), not replay state
    out = {
        "stats": stats,
        "uids": id_parts(ids)[1],
        "rng": buf.rng.bit_generator.state,
        "tree_leaves": state["tree_leaves"].copy(),
        "max_priority": state["counters"]["max_priority"],
    }
    if ids.size:
        g = buf.gather(ids)
        out["gather"] = (g.obs, g.next_obs, g.actions, g.returns, g.discounts)
    return out


def assert_same_view(x, y):
    assert x.keys() == y.keys()
    for k in x:
        if k == "gather":
            for u, v in zip(x[k], y[k]):
                np.testing.assert_array_equal(u, v)
        elif isinstance(x[k], np.ndarray):
            np.testing.assert_array_equal(x[k], y[k])
        else:
            assert x[k] == y[k], k


def assert_same_samples(*servers, batch_size=16):
    """Same items drawn; ids differ only in their epoch (the high bits) when a server was restored."""
    first, *others = [s.sample(batch_size, beta=0.4) for s in servers]
    for other in others:
        np.testing.assert_array_equal(id_parts(other.ids)[1], id_parts(first.ids)[1], err_msg="uids")
        for name in ("obs", "actions", "returns", "discounts", "next_obs", "weights"):
            np.testing.assert_array_equal(getattr(other, name), getattr(first, name), err_msg=name)


def without_epochs(state):
    """A server's state tree less the buffer's epochs (a restore moves to the next epoch)."""
    buffer = state["buffer"]
    counters = {k: v for k, v in buffer["counters"].items() if k != "epoch"}
    slots = {k: v for k, v in buffer["slots"].items() if k != "epoch"}
    return {**state, "buffer": {**buffer, "counters": counters, "slots": slots}}


def assert_same_but_one_epoch_on(restored, original):
    """``restored`` is ``original`` one epoch on: same state, and the records it took since
    the restore carry the new epoch."""
    assert_same_state(without_epochs(restored.state_dict()), without_epochs(original.state_dict()))
    a, b = restored.buffer, original.buffer
    assert a.epoch == b.epoch + 1
    moved = a.state_dict()["slots"]["epoch"] != b.state_dict()["slots"]["epoch"]
    assert np.all(a.state_dict()["slots"]["epoch"][moved] == a.epoch)


@pytest.fixture(scope="module")
def filled():
    """A server past several wraps of its 64 slots, and the batches that continue its streams."""
    batches = traffic(seed=1, rounds=90)
    server = ReplayServer(**CONFIG)
    drive(server, batches[:60], seed=2)
    assert server.buffer.records_added > 3 * CONFIG["capacity"]
    return server, batches[60:]


def test_round_trip_is_exact_and_streams_continue(filled, tmp_path):
    original, rest = filled
    path = tmp_path / "replay.snap"
    info = original.save_snapshot(str(path))
    assert info["path"] == str(path) and info["bytes"] == path.stat().st_size
    assert info["items"] == original.buffer.num_sampleable and info["seconds"] >= 0
    assert os.listdir(tmp_path) == ["replay.snap"]  # no temporary file left behind

    restored = ReplayServer(**{**CONFIG, "seed": 99})  # another seed: the rng comes from the file
    restored.add(traffic(seed=5, rounds=1)[0])  # and some state of its own, all replaced
    restored.load_snapshot(str(path))
    assert_same_but_one_epoch_on(restored, original)
    assert_same_view(observe(restored), observe(original))
    np.testing.assert_array_equal(restored.buffer.sampleable_ids(), original.buffer.sampleable_ids())
    assert restored.stats()["rejected"] == 1 and restored.limiter.samples == original.limiter.samples

    # The same further traffic (continuations of the same streams) gives the same replay,
    # also for a copy loaded from the same file later on.
    copy = ReplayServer(**CONFIG)
    copy.load_snapshot(str(path))
    for server in (original, restored, copy):
        drive(server, rest, seed=4)
    assert_same_view(observe(restored), observe(original))
    assert_same_view(observe(copy), observe(original))
    assert_same_but_one_epoch_on(restored, original)
    assert_same_state(copy.state_dict(), restored.state_dict())  # the same file, the same epoch
    assert_same_samples(original, restored, copy)


@pytest.mark.parametrize("flat", [False, True])
def test_round_trip_small_and_empty(tmp_path, flat):
    empty = ReplayServer(**CONFIG)
    empty.save_snapshot(str(tmp_path / "empty"))
    other = ReplayServer(**CONFIG)
    other.load_snapshot(str(tmp_path / "empty"))
    assert_same_but_one_epoch_on(other, empty)

    cfg = {**CONFIG, "stack_size": 1 if flat else 4, "prioritized": not flat}
    a, b = ReplayServer(**cfg), ReplayServer(**cfg)
    batches = traffic(seed=7, rounds=12, flat=flat)
    drive(a, batches[:6], seed=1)
    a.save_snapshot(str(tmp_path / "small"))
    b.load_snapshot(str(tmp_path / "small"))
    drive(a, batches[6:], seed=1)
    drive(b, batches[6:], seed=1)
    assert_same_samples(a, b)


def damaged_copies(good: bytes):
    size = len(good)
    for cut in (0, 7, 16, 40, size // 3, size // 2, size - 40, size - 24, size - 1):
        yield f"cut at {cut}", good[:cut]
    for pos in (3, 12, 20, 60, size // 4, size // 2, 3 * size // 4, *range(size - 26, size, 2)):
        bad = bytearray(good)
        bad[pos] ^= 0x10
        yield f"byte {pos} flipped", bytes(bad)
    yield "trailing bytes", good + b"\0" * 8
    yield "not a snapshot", b"hello world" * 10


def test_damaged_files_are_refused_and_nothing_changes(filled, tmp_path):
    original, _ = filled
    good_path = tmp_path / "good"
    original.save_snapshot(str(good_path))
    good = good_path.read_bytes()
    victim = ReplayServer(**CONFIG)
    drive(victim, traffic(seed=11, rounds=20), seed=3)
    before = observe(victim)
    bad_path = tmp_path / "bad"
    for what, data in damaged_copies(good):
        bad_path.write_bytes(data)
        with pytest.raises(SnapshotError) as err:
            victim.load_snapshot(str(bad_path))
        msg = str(err.value)
        assert str(bad_path) in msg and "\n" not in msg, what
        with pytest.raises(SnapshotError):
            read_snapshot(str(bad_path))  # the driver's check, without a server
    assert_same_view(observe(victim), before)
    with pytest.raises(SnapshotError, match="cannot read"):
        read_snapshot(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "change",
    [
        dict(capacity=128),
        dict(stack_size=2),
        dict(n_step=5),
        dict(gamma=0.99),
        dict(alpha=0.5),
        dict(prioritized=False),
    ],
)
def test_other_settings_are_refused(filled, tmp_path, change):
    original, _ = filled
    path = tmp_path / "snap"
    original.save_snapshot(str(path))
    other = ReplayServer(**{**CONFIG, **change})
    drive(other, traffic(seed=12, rounds=10), seed=3)
    before = observe(other)
    ((name, value),) = change.items()
    with pytest.raises(SnapshotError, match=f"{name}={value!r}") as err:
        other.load_snapshot(str(path))
    assert str(path) in str(err.value)
    assert_same_view(observe(other), before)


def test_other_frame_format_is_refused(filled, tmp_path):
    original, _ = filled
    path = tmp_path / "snap"
    original.save_snapshot(str(path))
    flat = ReplayServer(**CONFIG)
    flat.add(traffic(seed=1, rounds=1, flat=True)[0])
    before = observe(flat)
    with pytest.raises(SnapshotError, match="frames"):
        flat.load_snapshot(str(path))
    assert_same_view(observe(flat), before)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "snap"
    write_snapshot(str(path), {"a": np.arange(5), "blobs": BlobList([b"x", None, b"yz"])})
    old = path.read_bytes()
    state = read_snapshot(str(path))
    np.testing.assert_array_equal(state["a"], np.arange(5))
    assert state["blobs"] == [b"x", None, b"yz"]
    with pytest.raises(TypeError):  # fails mid-stream, after the header and the array went out
        write_snapshot(str(path), {"a": np.arange(5), "blobs": BlobList([b"x", 3])})
    with pytest.raises(TypeError, match="dtype"):  # no object arrays: nothing is ever pickled
        write_snapshot(str(path), {"a": np.array([None, 1])})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["snap"]


def test_section_sizes_are_checked_before_allocating(tmp_path):
    """A header that lies about sizes (with a recomputed CRC) is still refused cleanly."""
    path = tmp_path / "snap"
    write_snapshot(str(path), {"a": np.zeros(10, np.int64)})
    data = bytearray(path.read_bytes())
    start = snapshot._PREAMBLE.size
    hlen = snapshot._PREAMBLE.unpack_from(data)[1]
    header = msgpack.unpackb(bytes(data[start : start + hlen]))
    header["sections"][0]["shape"] = [1 << 40]
    new_header = msgpack.packb(header)
    body = snapshot._PREAMBLE.pack(snapshot.MAGIC, len(new_header)) + new_header + bytes(data[start + hlen : -24])
    body += snapshot._TRAILER.pack(zlib.crc32(body), 0, len(body) + snapshot._TRAILER.size, snapshot.END_MAGIC)
    path.write_bytes(body)
    with pytest.raises(SnapshotError, match="claims"):
        read_snapshot(str(path))


# --------------------------------------------------------------------------- ids after a crash

STEP = (0, 1.0, False, False, False)


def test_an_id_issued_before_a_crash_never_touches_an_item_added_after_the_restore(tmp_path):
    path = str(tmp_path / "snap")
    buf = ReplayBuffer(64, 4, 3, 0.9, seed=0)
    buf.add(step_batch(1, episode([1.0] * 10)))  # uids 0..9: items 0..6
    write_snapshot(path, buf.state_dict())
    buf.add(step_batch(1, [STEP] * 10, start=10))  # uids 10..19 after the snapshot: items 7..16
    issued = buf.sampleable_ids()
    # The learner holds these when the replay crashes: items 7..9 (their records are in the
    # snapshot, their windows were not) and 10..16 (records added after the snapshot).
    stale = issued[id_parts(issued)[1] >= 7]
    assert stale.size == 10

    restored = ReplayBuffer(64, 4, 3, 0.9, seed=0)  # the crash: a fresh replay from the snapshot
    restored.load_state_dict(read_snapshot(path))
    restored.add(step_batch(1, [STEP] * 10, start=10))  # the same uids 10..19 again
    ids = restored.sampleable_ids()
    assert np.array_equal(id_parts(ids)[1], id_parts(issued)[1]) and not set(ids.tolist()) & set(stale.tolist())
    weights = restored.sampling_weights(ids)
    assert restored.update_priorities(stale, np.full(stale.size, 1e6)) == 0
    np.testing.assert_array_equal(restored.sampling_weights(ids), weights)
    assert restored.stats()["priority_updates_ignored"] == stale.size
    with pytest.raises(ValueError):
        restored.gather(stale[:1])
    # Ids of items the snapshot holds still name those same items.
    kept = issued[id_parts(issued)[1] < 7]
    np.testing.assert_array_equal(restored.gather(kept).obs, buf.gather(kept).obs)
    assert restored.update_priorities(kept, np.full(kept.size, 5.0)) == kept.size


def test_each_restore_of_a_server_takes_a_new_epoch_even_from_the_same_snapshot(tmp_path):
    path = str(tmp_path / "replay.snap")
    server = ReplayServer(**CONFIG)
    drive(server, traffic(seed=1, rounds=20), seed=2)
    server.save_snapshot(path)
    epochs, stale = [], []
    for _ in range(3):  # crash, come back, issue ids, crash again before the next snapshot
        back = ReplayServer(**CONFIG, snapshot_path=path)
        epochs.append(back.buffer.epoch)
        before = back.buffer.sampleable_ids()
        assert back.update_priorities(np.array(stale, dtype=np.int64), np.full(len(stale), 1e6)) == 0
        np.testing.assert_array_equal(back.buffer.sampleable_ids(), before)
        for data in traffic(seed=5, rounds=8):
            back.add(data)
        stale = [i for i in back.buffer.sampleable_ids().tolist() if id_parts(i)[0] == back.buffer.epoch]
        assert stale
    assert epochs == [1, 2, 3]


def test_a_snapshot_from_before_id_epochs_is_read_as_epoch_zero(filled):
    original, _ = filled
    state = original.buffer.state_dict()
    old = {
        **state,
        "counters": {k: v for k, v in state["counters"].items() if k not in ("epoch", "priority_updates_ignored")},
        "slots": {k: v for k, v in state["slots"].items() if k != "epoch"},
    }
    buf = ReplayBuffer(CONFIG["capacity"], 4, 3, 0.9)
    buf.load_state_dict(old)
    assert buf.epoch == 1 and buf.stats()["priority_updates_ignored"] == 0
    np.testing.assert_array_equal(buf.sampleable_ids(), original.buffer.sampleable_ids())  # plain uids: epoch 0
