"""The mirror feed end to end: a FrameMirror fed with a replay's answers gathers exactly
the batches the stacked path gives, under prefetch, ring wrap-around, eviction and a
snapshot restore; a lost answer, a lost reset or a restarted shard is repaired by the next
requests; its staging buffer never grows; and the real entry point trains with it.

Frames are uint8[2, 2] = (stream, step) (or float32 vectors) as in tests/support/fakes.py.
"""

import collections
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.mirror import FrameMirror, MirrorError, Stage, mirror_bytes
from replay_server.buffer import ReplayBuffer
from tests.support.fakes import step_batch
from tests.support.nstep_cases import episode

S, N, GAMMA = 4, 3, 0.5
ROOT = Path(__file__).resolve().parents[2]


class Streams:
    """Random episodes on three streams, each stream's records numbered in order."""

    def __init__(self, seed: int, flat: bool = False):
        self.rng = np.random.default_rng(seed)
        self.sent = {1: 0, 2: 0, 3: 0}
        self.flat = flat

    def add_to(self, buf: ReplayBuffer) -> None:
        sid = int(self.rng.integers(1, 4))
        recs = episode(
            self.rng.integers(-1, 2, size=int(self.rng.integers(1, 9))).astype(float).tolist(),
            self.rng.choice(["term", "trunc", None]),
        )
        buf.add(step_batch(sid, recs, start=self.sent[sid], flat=self.flat))
        self.sent[sid] += len(recs)


def expected(buf: ReplayBuffer, answer):
    """What the stacked path gives for the answer's items, now (at draw time)."""
    ref = buf.gather(answer.ids)
    ref.weights = answer.weights
    return ref


def assert_same(got, ref):
    for name in ("obs", "next_obs"):
        g = getattr(got, name)
        assert isinstance(g, torch.Tensor)
        assert np.array_equal(g.cpu().numpy(), getattr(ref, name)), name
    for name in ("ids", "actions", "returns", "discounts", "weights"):
        assert np.array_equal(getattr(got, name), getattr(ref, name)), name
    assert got.obs.dtype == torch.from_numpy(ref.obs).dtype and got.obs.shape == ref.obs.shape


@pytest.mark.parametrize("flat", [False, True], ids=["atari-like", "flat"])
@pytest.mark.parametrize("seed", range(4))
def test_mirror_gathers_what_the_stacked_path_gives(seed, flat):
    """Random inserts and draws on a ring of 23 (it wraps dozens of times), up to 4 answers
    drawn before any is applied (prefetch, with inserts in between: frames they name are
    overwritten before they are gathered), and a snapshot restore halfway (a new epoch,
    uids issued again) while answers of the old epoch are still in flight."""
    check_random_sequence(seed, flat, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("flat", [False, True], ids=["atari-like", "flat"])
def test_a_cuda_mirror_gathers_what_the_stacked_path_gives(flat):
    """The same on the GPU: pinned staging, asynchronous copies into the ring, gathers queued behind them."""
    check_random_sequence(0, flat, "cuda")


def check_random_sequence(seed: int, flat: bool, device: str) -> None:
    rng = np.random.default_rng(100 + seed)
    buf = ReplayBuffer(23, S, N, GAMMA, seed=seed)
    mirror = FrameMirror(23, device)
    streams = Streams(seed, flat)
    in_flight: collections.deque = collections.deque()
    gathered, resets = [], 0
    snapshot = None
    for step in range(400):
        streams.add_to(buf)
        if step == 150:
            snapshot = copy.deepcopy(buf.state_dict())  # its arrays are the live ones
        if step == 250:
            buf.load_state_dict(snapshot)
        if buf.num_sampleable and rng.random() < 0.6:
            answer = buf.sample_indices(int(rng.integers(1, 12)), 0.4, mirror.position(), draw=rng.random() < 0.9)
            in_flight.append((answer, expected(buf, answer) if answer.has_batch else None))
        while in_flight and (len(in_flight) > rng.integers(0, 5) or step == 399):
            answer, ref = in_flight.popleft()
            resets += answer.delta.reset
            assert mirror.apply(answer.delta)
            if ref is not None:
                gathered.append((mirror.gather(answer), ref))
    for got, ref in gathered:  # compared only now: a gathered batch must not change when the ring does
        assert_same(got, ref)
    assert buf.epoch == 1 and resets == 2 and len(gathered) > 50
    assert buf.records_added > 10 * 23


def test_gathering_before_the_delta_that_brings_a_frame_is_refused():
    buf = ReplayBuffer(32, S, N, GAMMA, seed=0)
    streams = Streams(1)
    while buf.num_sampleable < 4:
        streams.add_to(buf)
    mirror = FrameMirror(32)
    first = buf.sample_indices(4, 0.4, mirror.position())
    for _ in range(12):
        streams.add_to(buf)
    second = buf.sample_indices(16, 0.4, mirror.position())  # in flight behind the first
    mirror.apply(first.delta)
    with pytest.raises(MirrorError):
        mirror.gather(second)  # names frames only second's delta brings (or that replaced first's)
    mirror.apply(second.delta)
    assert_same(mirror.gather(second), expected(buf, second))


def filled(seed: int, capacity: int = 32, items: int = 4) -> tuple[ReplayBuffer, Streams]:
    buf, streams = ReplayBuffer(capacity, S, N, GAMMA, seed=0), Streams(seed)
    while buf.num_sampleable < items:
        streams.add_to(buf)
    return buf, streams


def ask(buf: ReplayBuffer, mirror: FrameMirror, batch_size: int = 4):
    return buf.sample_indices(batch_size, 0.4, mirror.position())


def resumes_within(buf, mirror, streams, requests: int) -> int:
    """Asks (one request at a time) until a batch is gathered exactly; how many it took."""
    for k in range(1, requests + 1):
        streams.add_to(buf)
        answer = ask(buf, mirror)
        if mirror.apply(answer.delta) and answer.has_batch:
            assert_same(mirror.gather(answer), expected(buf, answer))
            return k
    raise AssertionError(f"no batch within {requests} requests")


def test_a_lost_answer_is_repaired_by_the_next_request():
    buf, streams = filled(2)
    mirror = FrameMirror(32)
    assert mirror.apply(ask(buf, mirror).delta)
    streams.add_to(buf)
    ask(buf, mirror)  # lost on the way
    streams.add_to(buf)
    answer = ask(buf, mirror)  # it named the lost answer as the one before it
    assert not mirror.apply(answer.delta) and mirror.in_sync and mirror.dropped == 1
    with pytest.raises(MirrorError):
        mirror.gather(answer)
    assert resumes_within(buf, mirror, streams, 1) == 1  # the next request starts from the mirror's position


def test_a_lost_reset_is_repaired_by_the_next_requests():
    buf, streams = filled(3)
    mirror = FrameMirror(32)
    lost = ask(buf, mirror)  # the first answer: a reset, lost on the way
    assert lost.delta.reset
    streams.add_to(buf)
    assert not mirror.apply(ask(buf, mirror).delta)  # it followed the lost reset
    assert resumes_within(buf, mirror, streams, 2) == 1
    assert mirror.epoch == buf.epoch == 0


def test_lost_answers_in_flight_cost_only_those_requests():
    """Four requests in flight, the first lost: the three behind it are dropped, and the
    requests sent after each drop start from the mirror's position again."""
    buf, streams = filled(4)
    mirror = FrameMirror(32)
    assert mirror.apply(ask(buf, mirror).delta)
    in_flight = collections.deque()
    for _ in range(4):
        streams.add_to(buf)
        in_flight.append(ask(buf, mirror))
    in_flight.popleft()  # lost
    gathered = 0
    for _ in range(8):
        answer = in_flight.popleft()
        if mirror.apply(answer.delta) and answer.has_batch:
            assert_same(mirror.gather(answer), expected(buf, answer))
            gathered += 1
        in_flight.append(ask(buf, mirror))
    assert mirror.dropped == 3 and gathered == 5


@pytest.mark.parametrize("snapshot", [True, False], ids=["from-its-snapshot", "empty"])
def test_a_restarted_shard_is_repaired_by_the_next_request(snapshot):
    """The shard comes back from its snapshot (a new epoch) or empty (epoch 0 again, uids
    from 0: the mirror's position lies beyond what it holds); either way a reset follows."""
    buf, streams = filled(5)
    mirror = FrameMirror(32)
    for _ in range(3):
        resumes_within(buf, mirror, streams, 1)
    state = copy.deepcopy(buf.state_dict())
    back = ReplayBuffer(32, S, N, GAMMA, seed=1)
    if snapshot:
        back.load_state_dict(state)
    streams = Streams(6)
    while back.num_sampleable < 4:
        streams.add_to(back)
    assert resumes_within(back, mirror, streams, 2) == 1
    assert mirror.epoch == back.epoch == (1 if snapshot else 0)


def test_a_forgotten_mirror_asks_for_everything():
    buf, streams = filled(7)
    mirror = FrameMirror(32)
    resumes_within(buf, mirror, streams, 1)
    in_flight = ask(buf, mirror)
    mirror.forget()  # its shard failed: what it holds may not be the shard's
    assert not mirror.in_sync and not mirror.apply(in_flight.delta)
    answer = ask(buf, mirror)
    assert answer.delta.reset and mirror.apply(answer.delta)
    assert_same(mirror.gather(answer), expected(buf, answer))


class _Event:
    def __init__(self):
        self.records = self.waits = 0

    def record(self):
        self.records += 1

    def synchronize(self):
        self.waits += 1


def test_the_staging_buffer_is_made_once_and_large_deltas_go_through_it_in_chunks():
    """The CUDA path's staging, on the CPU: a stage of 10 frames carries deltas of up to a
    whole ring in chunks, is allocated once (no superseded buffers kept), and each reuse
    waits for the copy before it."""
    events = []

    def event():
        events.append(_Event())
        return events[-1]

    stage = Stage(max_bytes=10 * 4, alloc=lambda shape, dtype: torch.empty(shape, dtype=dtype), event=event)
    buf, streams = ReplayBuffer(64, S, N, GAMMA, seed=0), Streams(8)
    mirror = FrameMirror(64, "cpu", stage=stage)
    sizes = []
    for step in range(60):
        for _ in range(int(step % 7 == 0) * 8 + 1):
            streams.add_to(buf)
        if buf.num_sampleable:
            answer = ask(buf, mirror, 8)
            sizes.append(len(answer.delta))
            assert mirror.apply(answer.delta)
            if answer.has_batch:
                assert_same(mirror.gather(answer), expected(buf, answer))
    assert max(sizes) > 3 * stage.rows and stage.rows == 10  # uint8[2, 2] frames: 4 bytes each
    assert stage.allocations == 1 and stage.nbytes == 40 and len(events) == 1
    assert events[0].records >= sum(-(-k // 10) for k in sizes if k) and events[0].waits == events[0].records - 1


def test_mirror_bytes_is_capacity_times_a_frame():
    assert mirror_bytes(1_000_000, (84, 84), "uint8") == 7_056_000_000
    assert mirror_bytes(10, (4,), "float32") == 160


def test_resolve_picks_the_mirror_where_it_fits_and_sizes_the_shards():
    from common.config import Config, ConfigError, ReplayConfig, resolve

    auto = Config(replay=ReplayConfig(replay_shards=None))
    atari = dict(atari=True, frame_bytes=84 * 84, cores=16)
    h200 = resolve(auto, cuda=True, device_free_bytes=139 * 2**30, **atari)
    assert h200.learner.feed == "mirror" and h200.replay.replay_shards == 4
    small_gpu = resolve(auto, cuda=True, device_free_bytes=8 * 2**30, **atari)  # 7 GB of frames > half of 8
    assert small_gpu.learner.feed == "stacked" and small_gpu.replay.replay_shards == 4
    cpu = resolve(auto, cuda=False, device_free_bytes=None, **atari)
    assert cpu.learner.feed == "stacked" and cpu.replay.replay_shards == 1
    forced = Config(learner=dataclasses.replace(Config().learner, feed="mirror"))
    assert resolve(forced, cuda=False, **atari).learner.feed == "mirror"  # a CPU mirror, as asked
    with pytest.raises(ConfigError, match="--feed=mirror"):
        resolve(forced, cuda=True, device_free_bytes=4 * 2**30, **atari)
    assert resolve(Config(), atari=True, cuda=True).replay.replay_shards == 1  # typed (the default) wins


@pytest.mark.ray
def test_entry_point_trains_with_a_cpu_mirror(tmp_path):
    """The real system, Ray and all, with the mirror forced on a CPU learner."""
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "learner.main",
        "--env",
        "CartPole-v1",
        "--feed",
        "mirror",
        "--num-actors",
        "1",
        "--envs-per-actor",
        "2",
        "--learning-starts",
        "200",
        "--batch-size",
        "32",
        "--replay-capacity",
        "5000",
        "--total-learner-steps",
        "40",
        "--time-limit",
        "90",
        "--log-interval",
        "2",
        "--run-dir",
        str(run_dir),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["learner_steps"] > 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["learner"]["feed"] == "mirror" and config["replay"]["replay_shards"] == 1
