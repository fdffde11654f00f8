"""ReplayBuffer on tiny hand-written trajectories (n=3, gamma=0.5, stack 4).

Frames are uint8[2, 2] with row 0 = stream id and row 1 = the record's step in its stream,
so every stack and bootstrap frame can be checked exactly.
"""

import numpy as np
import pytest

from common.messages import MessageError
from replay_server.buffer import ReplayBuffer
from tests.support.fakes import step_batch
from tests.support.nstep_cases import CASES, GAMMA, IDS, N, episode

S = 4


def deliver(buf, streams, chunk, flat=False):
    """Send each stream's records in batches of ``chunk`` (None: all at once), round-robin over streams."""
    sent = {sid: 0 for sid in streams}
    while any(sent[sid] < len(recs) for sid, recs in streams.items()):
        for sid, recs in streams.items():
            lo = sent[sid]
            if lo >= len(recs):
                continue
            hi = len(recs) if chunk is None else min(lo + chunk, len(recs))
            buf.add(step_batch(sid, recs[lo:hi], start=lo, flat=flat))
            sent[sid] = hi


def frame_keys(stacks):
    """(stream, step) of each frame of ``uint8[..., 2, 2]`` stacks."""
    return stacks[..., 0, 0].astype(int), stacks[..., 1, 0].astype(int)


def expected_stack(recs, step):
    """Steps of the stack ending at ``step``: oldest first, clamped to the segment start."""
    start = max(i for i in range(step + 1) if recs[i][4])
    return [max(step - d, start) for d in range(S - 1, -1, -1)]


@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
@pytest.mark.parametrize("name,streams,expected", CASES, ids=IDS)
def test_n_step_table(name, streams, expected, chunk):
    buf = ReplayBuffer(100, S, N, GAMMA, seed=0)
    deliver(buf, streams, chunk)
    assert len(buf) == sum(len(r) for r in streams.values())
    ids = buf.sampleable_ids()
    assert buf.num_sampleable == len(expected)
    sb = buf.gather(ids)
    sid, step = frame_keys(sb.obs[:, -1])
    assert sorted(zip(sid.tolist(), step.tolist())) == sorted(expected)
    for i, key in enumerate(zip(sid.tolist(), step.tolist())):
        ret, disc, boot = expected[key]
        recs = streams[key[0]]
        assert sb.returns[i] == ret and sb.discounts[i] == disc, key
        assert sb.actions[i] == recs[key[1]][0]
        obs_sid, obs_steps = frame_keys(sb.obs[i])
        nxt_sid, nxt_steps = frame_keys(sb.next_obs[i])
        assert np.all(obs_sid == key[0]) and np.all(nxt_sid == key[0])
        assert obs_steps.tolist() == expected_stack(recs, key[1])
        assert nxt_steps.tolist() == expected_stack(recs, boot)
    assert sb.obs.dtype == np.uint8 and sb.obs.shape == (len(ids), S, 2, 2)
    assert sb.returns.dtype == np.float32 and sb.discounts.dtype == np.float32 and sb.actions.dtype == np.int64


def test_restart_after_an_end_whose_final_frame_never_came():
    buf = ReplayBuffer(100, S, N, GAMMA)
    buf.add(step_batch(4, episode([1, 2, 4], "term")[:-1]))  # steps 0..2, the end at 2
    buf.add(step_batch(4, episode([8, 16, 32, 64]), start=3))  # the actor restarted: steps 3..6
    # Every window of the first segment needed the missing final frame: all dropped.
    sb = buf.gather(buf.sampleable_ids())
    assert frame_keys(sb.obs[:, -1])[1].tolist() == [3]
    assert (sb.returns[0], sb.discounts[0], frame_keys(sb.next_obs[0, -1])[1]) == (24, 0.125, 6)
    assert buf.stats()["items_dropped"] == 3


def test_gap_in_a_stream_starts_a_new_segment_and_counts_what_was_lost():
    # The replay came back from an older snapshot, or messages were lost: the stream's next
    # batch says seq 9 where 6 was due. Nothing may be spliced across the gap.
    buf = ReplayBuffer(100, S, N, GAMMA)
    buf.add(step_batch(4, episode([1, 2, 4, 8, 16, 32])))  # steps 0..5, episode open
    buf.add(step_batch(4, episode([64, 128, 256, 512], first=False), start=9))  # steps 9..12 of the same game
    sb = buf.gather(buf.sampleable_ids())
    _, steps = frame_keys(sb.obs)
    assert steps.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2], [9, 9, 9, 9]]
    assert (sb.returns[3], sb.discounts[3], frame_keys(sb.next_obs[3, -1])[1]) == (192, 0.125, 12)
    stats = buf.stats()
    assert stats["records_lost"] == 3 and stats["items_dropped"] == 3  # items 3, 4, 5 never complete


def test_gap_before_a_final_frame_drops_it_and_later_batches_continue():
    buf = ReplayBuffer(100, S, N, GAMMA)
    buf.add(step_batch(5, episode([1, 2])))
    # seq 4: the end of that episode (steps 2, 3) never came; its final frame did.
    buf.add(step_batch(5, [(-1, 0.0, False, False, False)] + episode([1, 1, 1]), start=4))
    buf.add(step_batch(5, episode([1, 1], first=False), start=8))  # no gap: the segment goes on
    sb = buf.gather(buf.sampleable_ids())
    _, steps = frame_keys(sb.obs)
    assert steps[:, -1].tolist() == [5, 6]  # items of the new segment, continued across batches
    assert steps[1].tolist() == [5, 5, 5, 6]
    assert buf.stats()["records_lost"] == 3  # steps 2, 3 and the orphaned final frame


def test_unknown_stream_mid_way_and_actor_restart():
    buf = ReplayBuffer(100, S, N, GAMMA)
    # A stream this replay never saw (it was restored from a snapshot older than the stream).
    assert buf.add(step_batch(6, episode([1, 1, 1, 1], first=False), start=50)) == 4
    assert buf.stats()["records_lost"] == 50
    # An actor that restarts sends seq 0 and first=True again: not a loss.
    assert buf.add(step_batch(6, episode([1, 1, 1, 1]))) == 4
    assert buf.stats()["records_lost"] == 50


def test_episode_start_stacks_repeat_the_first_frame():
    buf = ReplayBuffer(100, S, 1, GAMMA)
    recs = episode([0, 0, 0], "term") + episode([0, 0, 0, 0, 0])
    buf.add(step_batch(0, recs))
    sb = buf.gather(buf.sampleable_ids())
    _, steps = frame_keys(sb.obs)
    # Steps 4.. form the second segment: its stacks never reach back into the first.
    assert steps.tolist() == [
        [0, 0, 0, 0],
        [0, 0, 0, 1],
        [0, 0, 1, 2],
        [4, 4, 4, 4],
        [4, 4, 4, 5],
        [4, 4, 5, 6],
        [4, 5, 6, 7],
    ]


def test_flat_vectors_raw_codec_stack_one():
    buf = ReplayBuffer(100, 1, N, GAMMA, seed=0)
    deliver(buf, {1: episode([1, 2, 4, 8, 16], "trunc")}, chunk=2, flat=True)
    sb = buf.sample(8)
    assert sb.obs.dtype == np.float32 and sb.obs.shape == (8, 1, 3) and sb.next_obs.shape == (8, 1, 3)
    expected = {0: (3, 0.125, 3), 1: (6, 0.125, 4), 2: (12, 0.125, 5), 3: (16, 0.25, 5), 4: (16, 0.5, 5)}
    for i in range(8):
        step = int(sb.obs[i, 0, 1])
        assert sb.obs[i, 0].tolist() == [1, step, 0.25]
        assert (sb.returns[i], sb.discounts[i], int(sb.next_obs[i, 0, 1])) == expected[step]


# ---------------------------------------------------------------- eviction


def test_eviction_invalidates_items_whose_stack_lost_a_frame():
    buf = ReplayBuffer(12, S, N, GAMMA, seed=0)
    recs = episode(list(range(20)))
    buf.add(step_batch(0, recs[:12]))
    assert buf.sampleable_ids().tolist() == list(range(9))
    buf.add(step_batch(0, recs[12:14], start=12))  # evicts uids 0, 1 (slots wrap around)
    # Stored: 2..13. Items 2..4 are stored but their stacks reach back to 0 or 1.
    assert buf.sampleable_ids().tolist() == list(range(5, 11))
    seen = set()
    for _ in range(50):
        sb = buf.sample(16)
        seen.update(sb.ids.tolist())
        _, steps = frame_keys(sb.obs)
        _, nsteps = frame_keys(sb.next_obs)
        for i, uid in enumerate(sb.ids.tolist()):
            assert steps[i].tolist() == [uid - 3, uid - 2, uid - 1, uid]
            assert nsteps[i].tolist() == [uid, uid + 1, uid + 2, uid + 3]
            assert sb.returns[i] == uid + 0.5 * (uid + 1) + 0.25 * (uid + 2)
    assert seen == set(range(5, 11))


def test_eviction_wraps_around_and_segment_starts_survive():
    buf = ReplayBuffer(12, S, N, GAMMA, seed=0)
    recs = episode([1.0] * 15, "term") + episode([1.0] * 12)  # steps 0..15, then 16..27
    deliver(buf, {0: recs}, chunk=5)
    assert len(buf) == 12 and buf.stats()["evicted"] == 16
    ids = buf.sampleable_ids()
    sb = buf.gather(ids)
    _, steps = frame_keys(sb.obs)
    assert steps[:, -1].tolist() == list(range(16, 25))
    for row in steps:
        assert row.tolist() == expected_stack(recs, int(row[-1]))
    assert steps[0].tolist() == [16, 16, 16, 16]


def test_pending_item_evicted_before_its_window_completes():
    buf = ReplayBuffer(8, 1, N, GAMMA, seed=0)
    buf.add(step_batch(0, episode([1, 2])))  # uids 0, 1: pending on stream 0
    buf.add(step_batch(1, episode([1] * 8)))  # uids 2..9; evicts 0, 1
    buf.add(
        step_batch(0, [(0, 4.0, False, False, False)] * 2, start=2)
    )  # uids 10, 11 would complete uid 0; evicts 2, 3
    assert buf.sampleable_ids().tolist() == [4, 5, 6]  # stream 1, steps 2..4
    sb = buf.gather(buf.sampleable_ids())
    assert sb.obs[:, 0, 0, 0].tolist() == [1, 1, 1]


# ---------------------------------------------------------------- priorities


def filled_buffer(prioritized=True, capacity=100, records=50):
    buf = ReplayBuffer(capacity, S, N, GAMMA, prioritized=prioritized, alpha=0.6, seed=123)
    buf.add(step_batch(0, episode([1.0] * records)))
    return buf


def test_priority_update_changes_sampling_frequency():
    buf = filled_buffer()
    n_items = buf.num_sampleable
    assert n_items == 47
    assert buf.update_priorities(np.array([10]), np.array([100.0])) == 1
    heavy = 100.0**0.6
    counts = np.zeros(50)
    for _ in range(200):
        sb = buf.sample(64, beta=0.4)
        np.add.at(counts, sb.ids, 1)
        w10 = sb.weights[sb.ids == 10]
        if w10.size and np.any(sb.ids != 10):
            # w_i proportional to P(i)^-beta, normalized by the largest weight (an item of priority 1).
            np.testing.assert_allclose(w10, heavy**-0.4, rtol=1e-5)
            assert np.all(sb.weights[sb.ids != 10] == 1)
    p10 = heavy / (heavy + n_items - 1)
    assert counts[10] / counts.sum() == pytest.approx(p10, rel=0.05)
    others = np.delete(counts[:47], 10)
    assert others.min() > 0.5 * others.mean()


def test_new_items_get_the_running_max_priority_and_sent_priorities_are_used():
    buf = filled_buffer()
    buf.update_priorities(np.array([3]), np.array([9.0]))
    step = (1, 0.0, False, False, False)
    buf.add(step_batch(0, [step] * 2, start=50))  # completes items 47, 48
    np.testing.assert_allclose(buf.sampling_weights(np.array([47, 48])), (9.0 + 1e-6) ** 0.6)
    buf.add(step_batch(0, [step] * 3, start=52, priorities=[0.5, 2.0, 4.0]))  # completes 49..51, sent none
    np.testing.assert_allclose(buf.sampling_weights(np.array([49, 50, 51])), (9.0 + 1e-6) ** 0.6)
    buf.add(step_batch(0, [step] * 2, start=55))  # completes 52, 53: their priorities came with them
    np.testing.assert_allclose(
        buf.sampling_weights(np.array([52, 53])), (np.array([0.5, 2.0]) + 1e-6) ** 0.6, rtol=1e-6
    )


def test_priority_updates_ignored_for_evicted_and_unsampleable_ids():
    buf = filled_buffer(capacity=50)
    buf.add(step_batch(0, [(1, 0.0, False, False, False)] * 10, start=50))  # evicts uids 0..9
    total = buf.sampling_weights(buf.sampleable_ids()).sum()
    ids = np.array(
        [5, 11, 58, 59, 1000, -1, 20, 20]
    )  # evicted, lost a stack frame, pending, pending, future, bad, ok x2
    assert buf.update_priorities(ids, np.full(8, 1e6)) == 2
    assert buf.sampling_weights(np.array([20])) == pytest.approx((1e6 + 1e-6) ** 0.6)
    assert buf.sampling_weights(buf.sampleable_ids()).sum() == pytest.approx(total - 1 + (1e6 + 1e-6) ** 0.6)
    assert buf.sampling_weights(ids[:5]).tolist() == [0] * 5
    assert buf.update_priorities(np.array([21, 22]), np.array([np.nan, -1.0])) == 0
    assert buf.stats()["priority_updates_ignored"] == 6 + 2


def test_uniform_sampling():
    buf = filled_buffer(prioritized=False)
    assert buf.update_priorities(np.array([10]), np.array([100.0])) == 1  # accepted, no effect
    counts = np.zeros(50)
    for _ in range(100):
        sb = buf.sample(64)
        assert np.all(sb.weights == 1)
        np.add.at(counts, sb.ids, 1)
    assert counts[47:].sum() == 0
    assert counts[:47].min() > 0.7 * counts[:47].mean() and counts[:47].max() < 1.3 * counts[:47].mean()


def test_sample_empty_raises():
    buf = ReplayBuffer(10, S, N, GAMMA)
    with pytest.raises(ValueError):
        buf.sample(4)
    buf.add(step_batch(0, episode([1, 2, 3])))  # nothing complete yet
    with pytest.raises(ValueError):
        buf.sample(4)


# ---------------------------------------------------------------- stream grammar

STEP = (0, 1.0, False, False, False)


@pytest.mark.parametrize(
    "history,bad",
    [
        ([], [STEP] * 4),  # an unseen stream starts without first
        ([(0, 1.0, True, False, True), (-1, 0.0, False, False, False)], [STEP] * 4),  # first=False after a final frame
        ([(0, 1.0, False, True, True)], [STEP] * 4),  # an end not followed by its final frame
        ([(0, 1.0, False, False, True)], [(-1, 0.0, False, False, False)]),  # a final frame without an end
        ([(0, 1.0, True, False, True)], [(-1, 0.0, False, False, True)]),  # a final frame with first=True
        (
            [],
            [(0, 1.0, False, False, True), (-1, 0.0, False, False, False), (0, 1.0, False, False, True)],
        ),  # same, inside a batch
    ],
)
def test_bad_grammar_raises_and_stores_nothing(history, bad):
    buf = ReplayBuffer(10, S, N, GAMMA)
    if history:
        buf.add(step_batch(0, history))
    before = buf.stats()
    with pytest.raises(MessageError):
        buf.add(step_batch(0, bad, start=len(history)))
    assert buf.stats() == before and len(buf) == len(history)
    # The stream is unharmed: a restart is accepted and its first window completes.
    buf.add(step_batch(0, [(0, 1.0, False, False, True)] + [STEP] * 3, start=10))
    assert len(buf) == len(history) + 4
    assert 0 in frame_keys(buf.gather(buf.sampleable_ids()).obs[:, -1])[1] - 10


def test_frame_format_must_not_change():
    buf = ReplayBuffer(10, S, N, GAMMA)
    buf.add(step_batch(0, episode([1, 2])))
    with pytest.raises(MessageError):
        buf.add(step_batch(1, episode([1, 2]), flat=True))
    with pytest.raises(MessageError):
        buf.add(step_batch(1, episode([1, 2]), frames=np.zeros((2, 3, 2), dtype=np.uint8)))
    assert len(buf) == 2 and buf.stats()["streams"] == 1


def test_batch_longer_than_capacity():
    buf = ReplayBuffer(8, S, N, GAMMA, seed=0)
    recs = episode(list(range(30)), "term")
    assert buf.add(step_batch(0, recs)) == 31
    # Stored: 23..30 (30 is the final frame). Items 26..29 have full stacks (26's reaches back to 23).
    assert buf.sampleable_ids().tolist() == [26, 27, 28, 29]


def test_frame_bytes_follows_the_stored_blobs_through_wrap_around_and_restore():
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(capacity=10, stack_size=1, n_step=1, gamma=0.9, seed=0)
    assert buf.stats()["frame_bytes"] == 0
    start = 0
    for k in range(7):  # 28 records into 10 slots: every add but the first two wraps or evicts
        noise = rng.integers(0, 256 if k % 2 else 2, size=(4, 8, 8), dtype=np.uint8)  # blobs of two sizes
        records = [(1, 0.0, False, False, start == 0 and i == 0) for i in range(4)]
        buf.add(step_batch(0, records, start=start, frames=noise))
        start += 4
        held = sum(len(b) for b in buf._blobs if b is not None)
        assert buf.stats()["frame_bytes"] == held > 0
    sizes = {len(b) for b in buf._blobs if b is not None}
    assert len(sizes) > 1  # the check above saw blobs of different sizes replace each other
    other = ReplayBuffer(capacity=10, stack_size=1, n_step=1, gamma=0.9, seed=1)
    other.load_state_dict(buf.state_dict())
    assert other.stats()["frame_bytes"] == buf.stats()["frame_bytes"]
