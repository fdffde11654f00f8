"""The fast ReplayBuffer against a slow, obviously-correct reference on random streams.

The reference keeps every record ever added and, on demand, rebuilds every transition with
plain Python loops straight from the definitions:

* the window of record t runs over t, t+1, ... of its segment until n records or an
  episode end; it is complete once the bootstrap record (the one after the window) exists;
* return, discount and bootstrap as in the ReplayBuffer docstring;
* a stack is the last S records of the segment up to a record, the oldest repeated;
* an item is sampleable iff complete and every frame of its obs and next_obs stacks is
  among the last ``capacity`` records added.
"""

import numpy as np
import pytest

from replay_server.buffer import ReplayBuffer
from tests.support.fakes import step_batch


class ReferenceReplay:
    def __init__(self, capacity, stack_size, n_step, gamma):
        self.capacity, self.s, self.n, self.gamma = capacity, stack_size, n_step, gamma
        self.records = []  # one dict per uid
        self.segments = []  # lists of uids

    def add(self, stream, frames, actions, rewards, terminated, truncated, first):
        open_segment = {}
        for seg in self.segments:
            open_segment[self.records[seg[0]]["stream"]] = seg  # the stream's latest segment
        for i in range(len(actions)):
            uid = len(self.records)
            self.records.append(
                dict(
                    stream=stream,
                    frame=frames[i],
                    action=int(actions[i]),
                    reward=float(rewards[i]),
                    terminated=bool(terminated[i]),
                    truncated=bool(truncated[i]),
                )
            )
            if first[i]:
                open_segment[stream] = [uid]
                self.segments.append(open_segment[stream])
            else:
                open_segment[stream].append(uid)

    def stack(self, seg, pos):
        return [seg[max(pos - d, 0)] for d in range(self.s - 1, -1, -1)]

    def transitions(self):
        lo = len(self.records) - self.capacity
        out = {}
        for seg in self.segments:
            for pos, uid in enumerate(seg):
                if self.records[uid]["action"] == -1:
                    continue
                ret, k, complete = 0.0, 0, True
                for j in range(self.n):
                    if pos + j >= len(seg):
                        complete = False
                        break
                    rec = self.records[seg[pos + j]]
                    ret += self.gamma**j * rec["reward"]
                    k += 1
                    if rec["terminated"] or rec["truncated"]:
                        break
                if not complete or pos + k >= len(seg):
                    continue
                terminated = self.records[seg[pos + k - 1]]["terminated"]
                discount = 0.0 if terminated else self.gamma**k
                obs_uids, next_uids = self.stack(seg, pos), self.stack(seg, pos + k)
                if min(obs_uids + next_uids) < lo:
                    continue
                out[uid] = dict(
                    obs=np.stack([self.records[u]["frame"] for u in obs_uids]),
                    action=self.records[uid]["action"],
                    ret=ret,
                    discount=discount,
                    next_obs=np.stack([self.records[u]["frame"] for u in next_uids]),
                )
        return out


class RandomStream:
    """An actor stream following the grammar, with random episode ends and restarts."""

    def __init__(self, stream_id, rng, p_end=0.12, p_restart=0.04, p_lost_final=0.2):
        self.id, self.rng = stream_id, rng
        self.p_end, self.p_restart, self.p_lost_final = p_end, p_restart, p_lost_final
        self.state = "start"  # start | running | ended | final
        self.seq = 0  # records sent so far: the next batch's seq

    def record(self, at_batch_start):
        """(action, reward, terminated, truncated, first) of the next record."""
        rng = self.rng
        # An actor restarting between batches may lose a final frame; inside a batch it cannot.
        if self.state == "ended" and not (at_batch_start and rng.random() < self.p_lost_final):
            self.state = "final"
            return (-1, 0.0, False, False, False)
        first = self.state != "running" or rng.random() < self.p_restart
        end = rng.random() < self.p_end
        term = end and rng.random() < 0.5
        self.state = "ended" if end else "running"
        return (int(rng.integers(0, 4)), float(rng.integers(-1, 3)), term, end and not term, first)

    def batch(self, length):
        """(records, seq of the first one)."""
        seq, self.seq = self.seq, self.seq + length
        return [self.record(i == 0) for i in range(length)], seq


def run_regression(seed, capacity, stack_size, n_step, gamma, flat, n_streams=4, n_batches=120, prioritized=True):
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(capacity, stack_size, n_step, gamma, prioritized=prioritized, seed=seed)
    ref = ReferenceReplay(capacity, stack_size, n_step, gamma)
    streams = [RandomStream(10 + i, rng) for i in range(n_streams)]
    checked = 0
    for b in range(n_batches):
        st = streams[int(rng.integers(n_streams))]
        recs, seq = st.batch(int(rng.integers(1, 9)))
        t = len(recs)
        if flat:
            frames = rng.standard_normal((t, 3)).astype(np.float32)
        else:
            frames = rng.integers(0, 256, size=(t, 3, 2), dtype=np.uint8)
        prio = rng.random(t).astype(np.float32) * 3 if rng.random() < 0.3 else None
        batch = step_batch(st.id, recs, frames=frames, priorities=prio, seq=seq)
        buf.add(batch)
        ref.add(
            st.id, frames, **{k: getattr(batch, k) for k in ("actions", "rewards", "terminated", "truncated", "first")}
        )

        expected = ref.transitions()
        ids = buf.sampleable_ids()
        assert ids.tolist() == sorted(expected), f"batch {b}: sampleable sets differ"
        assert len(buf) == min(len(ref.records), capacity)
        if ids.size:
            sb = buf.gather(ids)
            for i, uid in enumerate(ids.tolist()):
                e = expected[uid]
                np.testing.assert_array_equal(sb.obs[i], e["obs"])
                np.testing.assert_array_equal(sb.next_obs[i], e["next_obs"])
                assert sb.actions[i] == e["action"]
                assert sb.returns[i] == pytest.approx(e["ret"], rel=1e-6, abs=1e-6)
                assert sb.discounts[i] == pytest.approx(e["discount"], rel=1e-6)
                checked += 1
            sample = buf.sample(16)
            assert set(sample.ids.tolist()) <= set(expected)
            again = buf.gather(sample.ids)
            np.testing.assert_array_equal(sample.obs, again.obs)
            np.testing.assert_array_equal(sample.next_obs, again.next_obs)
            np.testing.assert_array_equal(sample.returns, again.returns)
            if rng.random() < 0.5:  # priority updates must never break the invariants
                stale = rng.integers(0, len(ref.records), size=8)
                buf.update_priorities(np.concatenate([sample.ids, stale]), rng.random(24) * 5)
    assert len(ref.records) > 3 * capacity, "the buffer should have wrapped around several times"
    assert checked > 0
    return checked


@pytest.mark.parametrize(
    "seed,capacity,stack_size,n_step,gamma,flat",
    [
        (0, 37, 4, 3, 0.9, False),
        (1, 64, 4, 3, 0.99, False),
        (2, 16, 1, 1, 0.5, True),
        (3, 50, 2, 5, 0.7, True),
        (4, 5, 4, 3, 0.9, False),  # smaller than a stack plus a window: hardly anything survives
        (5, 29, 4, 3, 0.9, False),
    ],
)
def test_fast_buffer_matches_reference(seed, capacity, stack_size, n_step, gamma, flat):
    run_regression(seed, capacity, stack_size, n_step, gamma, flat)


def test_uniform_buffer_matches_reference():
    run_regression(7, 40, 4, 3, 0.9, False, prioritized=False)
