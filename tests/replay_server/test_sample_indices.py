"""The replay's side of the mirror feed: ``sample_indices`` answers with frame uids and a
delta that carries each stored frame to a consumer once, in order, even without a batch,
starting from the position the request carries (the shard keeps no cursor of its own).

Frames are uint8[2, 2] = (stream, step) as in tests/support/fakes.py; the mirror's side, and the
equivalence with the stacked path, are in tests/learner/test_mirror.py.
"""

import pickle

import lz4.block
import numpy as np
import pytest

from common.messages import IndexBatch, MessageError, compress_frame
from replay_server.buffer import ReplayBuffer
from replay_server.mirror_protocol import AnswerEnds, FeedPosition, PositionKeeper
from replay_server.remote import ReplayServer
from tests.support.fakes import step_batch
from tests.support.nstep_cases import episode

S, N, GAMMA = 4, 3, 0.5


class Streams:
    """Random episodes on a few streams, each stream's records numbered in order."""

    def __init__(self, seed: int, streams=(1, 2, 3)):
        self.rng = np.random.default_rng(seed)
        self.sent = {sid: 0 for sid in streams}

    def add_to(self, buf) -> int:
        sid = int(self.rng.choice(list(self.sent)))
        end = self.rng.choice(["term", "trunc", None])
        recs = episode(self.rng.integers(-1, 2, size=int(self.rng.integers(1, 9))).astype(float).tolist(), end)
        batch = step_batch(sid, recs, start=self.sent[sid])
        self.sent[sid] += len(recs)
        if isinstance(buf, ReplayServer):
            from common.messages import encode_step_batch

            buf.add(encode_step_batch(batch))
        else:
            buf.add(batch)
        return len(recs)


def delta_uids(delta) -> list[int]:
    return list(range(delta.first_uid, delta.end_uid))


def test_each_stored_frame_reaches_a_consumer_once_and_in_order():
    buf = ReplayBuffer(29, S, N, GAMMA, seed=0)
    streams, seen, ask = Streams(0), [], PositionKeeper(buf.sample_indices)
    for step in range(300):
        streams.add_to(buf)
        if buf.num_sampleable and step % 4 == 0:
            answer = ask(8, 0.4)
            answer.validate()
            d = answer.delta
            assert d.reset == (not seen)
            assert d.since_uid == (-1 if not seen else seen[-1] + 1)
            uids = delta_uids(d)
            assert uids == sorted(set(uids)) and (not seen or uids[0] > seen[-1])
            assert np.array_equal(d.positions, np.array(uids) % 29)
            # the frames are the stored bytes of exactly those uids, and every one is still stored
            assert uids[0] >= buf.records_added - 29 and d.end_uid == buf.records_added
            blobs = [d.blobs[d.offsets[i] : d.offsets[i + 1]].tobytes() for i in range(len(d))]
            assert blobs == [buf._blobs[u % 29] for u in uids]
            seen += uids
    assert len(seen) == len(set(seen)) > 29  # the ring wrapped and nothing came twice


def test_frames_evicted_before_an_answer_are_skipped_not_sent():
    buf = ReplayBuffer(16, S, N, GAMMA, seed=0)
    streams, ask = Streams(1), PositionKeeper(buf.sample_indices)
    while buf.num_sampleable == 0:
        streams.add_to(buf)
    first = ask(4).delta
    while buf.records_added < first.end_uid + 40:  # more than the capacity arrives
        streams.add_to(buf)
    d = ask(4).delta
    assert not d.reset and d.since_uid == first.end_uid
    assert d.first_uid == buf.records_added - 16 and len(d) == 16


def test_an_answer_without_a_batch_still_carries_its_delta():
    server = ReplayServer(64, S, N, GAMMA, seed=0, samples_per_insert=1.0, min_size=10, tolerance=8.0)
    streams, ask = Streams(2), PositionKeeper(server.sample_indices)
    streams.add_to(server)
    answer = ask(8)  # too few items: the limiter says wait
    assert not answer.has_batch and len(answer) == 0 and answer.delta.reset
    assert len(answer.delta) == server.buffer.records_added
    while server.buffer.num_sampleable < 10:
        streams.add_to(server)
    got, deltas = [], [answer.delta]
    for _ in range(6):  # the ratio runs out: answers go on, with their deltas, without batches
        a = ask(8)
        got.append(a.has_batch)
        deltas.append(a.delta)
        streams.add_to(server)
    assert True in got and False in got
    assert server.limiter.samples == 8 * got.count(True)
    uids = [u for d in deltas for u in delta_uids(d)]
    assert server.buffer.records_added <= 64  # nothing evicted: every frame went out, once, in order
    assert uids == list(range(deltas[-1].end_uid))


def test_a_consumer_far_behind_catches_up_over_answers_without_batches():
    buf = ReplayBuffer(200, S, N, GAMMA, seed=0)
    streams = Streams(3)
    while buf.records_added < 150:
        streams.add_to(buf)
    answers, ask = [], PositionKeeper(buf.sample_indices)
    while not answers or not answers[-1].has_batch:
        answers.append(ask(8, max_delta_frames=40))
    assert [len(a.delta) for a in answers[:-1]] == [40] * (len(answers) - 1)
    assert answers[0].delta.reset and not any(a.delta.reset for a in answers[1:])
    assert [u for a in answers for u in delta_uids(a.delta)] == list(range(buf.records_added))


def test_a_restore_or_a_position_of_no_epoch_resends_everything_with_reset():
    buf = ReplayBuffer(32, S, N, GAMMA, seed=0)
    streams, ask = Streams(4), PositionKeeper(buf.sample_indices)
    while buf.records_added < 50:
        streams.add_to(buf)
    ask(4)
    state = buf.state_dict()
    streams.add_to(buf)
    assert not ask(4).delta.reset
    buf.load_state_dict(state)  # a restore: a new epoch, uids issued again
    d = ask(4).delta
    assert d.reset and d.epoch == 1 and delta_uids(d) == list(range(buf.records_added - 32, buf.records_added))
    assert not ask(4).delta.reset
    assert buf.sample_indices(4).delta.reset  # no position: everything
    assert buf.sample_indices(4, 0.4, FeedPosition(epoch=0, next_uid=10)).delta.reset  # the old epoch
    # consumers are apart: each request carries its own position
    other = PositionKeeper(buf.sample_indices)
    assert other(4).delta.reset and not other(4).delta.reset and not ask(4).delta.reset


def test_a_position_beyond_what_the_shard_holds_gets_a_reset():
    """A shard restarted without a snapshot counts its uids from 0 again in the same epoch."""
    buf = ReplayBuffer(32, S, N, GAMMA, seed=0)
    streams = Streams(5)
    while buf.records_added < 20:
        streams.add_to(buf)
    d = buf.sample_indices(4, 0.4, FeedPosition(epoch=0, next_uid=buf.records_added + 1)).delta
    assert d.reset and delta_uids(d) == list(range(buf.records_added))
    d = buf.sample_indices(4, 0.4, FeedPosition(epoch=0, next_uid=5)).delta
    assert not d.reset and d.since_uid == 5 and delta_uids(d) == list(range(5, buf.records_added))


def test_a_request_that_names_the_answer_before_it_gets_only_newer_frames():
    """Requests in flight carry the same position; ``after`` names the previous request, so
    each frame goes once. If that answer was lost the delta starts beyond the mirror's
    position (the mirror drops it), and a request that names none starts from the position."""
    buf = ReplayBuffer(64, S, N, GAMMA, seed=0)
    streams = Streams(6)
    while buf.records_added < 10:
        streams.add_to(buf)
    here = FeedPosition(epoch=0, next_uid=0, token=7, seq=1)
    first = buf.sample_indices(4, 0.4, here).delta  # epoch 0 from uid 0: not a reset
    assert not first.reset and first.since_uid == 0 and first.end_uid == buf.records_added
    streams.add_to(buf)
    second = buf.sample_indices(4, 0.4, FeedPosition(0, 0, token=7, seq=2, after=1)).delta
    assert second.since_uid == first.end_uid and delta_uids(second) == list(range(first.end_uid, buf.records_added))
    # another consumer's token, or a request naming an answer that is not the last one: from the position
    assert buf.sample_indices(4, 0.4, FeedPosition(0, 0, token=8, seq=2, after=1)).delta.since_uid == 0
    assert buf.sample_indices(4, 0.4, FeedPosition(0, 0, token=7, seq=9, after=5)).delta.since_uid == 0


def test_answer_ends_are_remembered_for_a_bounded_number_of_consumers():
    ends = AnswerEnds(max_consumers=2)
    for token in (1, 2, 3):
        ends.record(FeedPosition(0, 0, token=token, seq=1), epoch=0, end_uid=100)
    follow = {t: ends.start(FeedPosition(0, 5, token=t, seq=2, after=1), epoch=0, records_added=200) for t in (1, 2, 3)}
    assert follow == {1: 5, 2: 100, 3: 100}  # the oldest consumer starts from its position
    assert ends.start(FeedPosition(0, 5, token=3, seq=2, after=1), epoch=1, records_added=200) is None


def test_draws_are_the_same_items_as_sample_draws():
    a, b = ReplayBuffer(64, S, N, GAMMA, seed=5), ReplayBuffer(64, S, N, GAMMA, seed=5)
    sa, sb = Streams(6), Streams(6)
    for _ in range(30):
        sa.add_to(a), sb.add_to(b)
    ia, sb_ = a.sample_indices(32, 0.5), b.sample(32, 0.5)
    assert np.array_equal(ia.ids, sb_.ids) and np.array_equal(ia.weights, sb_.weights)
    for name in ("actions", "returns", "discounts"):
        assert np.array_equal(getattr(ia, name), getattr(sb_, name))


def test_validate_names_a_broken_field():
    buf = ReplayBuffer(64, S, N, GAMMA, seed=0)
    streams = Streams(7)
    for _ in range(10):
        streams.add_to(buf)
    answer = buf.sample_indices(8)
    answer.obs_uids = answer.obs_uids.astype(np.int32)
    with pytest.raises(MessageError, match="obs_uids"):
        answer.validate()


def atari_like_frames(rng, count):
    """uint8[count, 84, 84] that compress about as Breakout's do (≈ 17x with lz4)."""
    frames = np.zeros((count, 84, 84), dtype=np.uint8)
    frames[:, 0:6, :] = 142  # the wall
    for f in frames:
        for _ in range(18):  # bricks, ball and paddle: blocks at random places
            y, x = rng.integers(8, 80), rng.integers(0, 76)
            f[y : y + 3, x : x + 8] = rng.integers(50, 200)
        f[rng.integers(8, 84, 40), rng.integers(0, 84, 40)] = rng.integers(0, 255, 40)
    return frames


def test_an_answer_of_512_with_a_realistic_delta_is_under_100_kb():
    """A learner taking 400 batches/s while actors insert 16K frames/s gets 40 new frames
    per answer; the answer, pickled as Ray pickles it, stays under 100 KB (a stacked
    batch of 512 is ≈ 29 MB)."""
    rng = np.random.default_rng(0)
    frames = atari_like_frames(rng, 2000)
    ratio = frames[0].nbytes / np.mean([len(compress_frame(f, "lz4")) for f in frames[:50]])
    assert 10 < ratio < 30, ratio
    buf = ReplayBuffer(4096, S, N, 0.99, seed=0)
    t = 1000
    recs = [(int(i % 4), 0.0, False, False, i == 0) for i in range(t)]
    buf.add(step_batch(1, recs, frames=frames[:t]))
    ask = PositionKeeper(buf.sample_indices)
    ask(512)  # the full sync
    recs = [(int(i % 4), 0.0, False, False, False) for i in range(40)]
    buf.add(step_batch(1, recs, start=t, frames=frames[t : t + 40]))
    answer = ask(512)
    assert answer.has_batch and len(answer.delta) == 40
    wire = len(pickle.dumps(answer, protocol=5))
    assert wire <= 100_000, wire
    assert answer.nbytes <= wire
    assert (
        lz4.block.decompress(
            answer.delta.blobs[answer.delta.offsets[0] : answer.delta.offsets[1]].tobytes(), uncompressed_size=84 * 84
        )
        == frames[t].tobytes()
    )


def test_index_batch_without_a_batch_is_small():
    buf = ReplayBuffer(64, S, N, GAMMA, seed=0)
    answer = buf.sample_indices(8, draw=False)
    assert isinstance(answer, IndexBatch) and not answer.has_batch and len(answer.delta) == 0
    answer.validate()
    assert len(pickle.dumps(answer, protocol=5)) < 2_000


def test_priorities_sent_with_a_request_are_applied_before_its_draw():
    a = ReplayServer(64, S, N, GAMMA, seed=3)
    b = ReplayServer(64, S, N, GAMMA, seed=3)
    sa, sb = Streams(8), Streams(8)
    for _ in range(20):
        sa.add_to(a), sb.add_to(b)
    ids = a.buffer.sampleable_ids()
    prios = np.linspace(0.0, 5.0, ids.size)
    b.update_priorities(ids, prios)
    got, want = a.sample_indices(16, 0.4, priorities=(ids, prios)), b.sample_indices(16, 0.4)
    assert np.array_equal(got.ids, want.ids) and np.array_equal(got.weights, want.weights)
