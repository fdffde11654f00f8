"""The feeder thread: batches in the order they were made, errors handed over, a clean stop."""

from __future__ import annotations

import threading
import time

import pytest

from learner.feeder import Feeder


def take(feeder, n, deadline_s=10.0):
    got, end = [], time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < end:
        b = feeder.get(timeout=0.05)
        if b is not None:
            got.append(b)
    return got


def test_batches_leave_in_the_order_fetch_made_them_and_none_is_dropped():
    made = iter(range(10_000))
    # Every third call has nothing to train on yet (the rate limiter, a restarting shard).
    calls = iter(range(10**9))
    feeder = Feeder(lambda: None if next(calls) % 3 == 2 else next(made))
    try:
        assert take(feeder, 300) == list(range(300))
    finally:
        assert feeder.close()


def test_the_feeder_runs_ahead_only_by_its_depth():
    fetched = []

    def fetch():
        fetched.append(len(fetched))
        return fetched[-1]

    feeder = Feeder(fetch, depth=2)
    try:
        end = time.monotonic() + 10
        while len(fetched) < 3 and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.2)  # nobody takes: the queue holds 2 and one more waits to go in, no fourth
        assert len(fetched) == 3
        assert take(feeder, 5) == [0, 1, 2, 3, 4]
    finally:
        feeder.close()


def test_a_fetch_error_reaches_the_learners_thread_after_the_batches_made_before():
    state = iter([1, 2, RuntimeError("replay-0 answered garbage")])

    def fetch():
        x = next(state)
        if isinstance(x, Exception):
            raise x
        return x

    feeder = Feeder(fetch)
    assert take(feeder, 2) == [1, 2]
    with pytest.raises(RuntimeError, match="garbage"):
        for _ in range(200):
            feeder.get(timeout=0.05)
    assert feeder.close()


def test_get_waits_at_most_its_timeout_when_nothing_comes():
    release = threading.Event()
    feeder = Feeder(lambda: (release.wait(), None)[1])
    t0 = time.monotonic()
    assert feeder.get(timeout=0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 2.0
    release.set()
    assert feeder.close()


def test_the_feeder_thread_takes_the_learners_cuda_device_and_leaves_a_cpu_alone(monkeypatch):
    import torch

    from learner.feeder import use_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert not use_device(None) and not use_device(torch.device("cpu")) and not use_device("cuda")
    assert chosen == []  # a CPU run never touches CUDA; plain "cuda" is the current device already
    assert use_device("cuda:1") and chosen == [torch.device("cuda:1")]
    feeder = Feeder(lambda: None, device=torch.device("cuda:2"))
    try:
        end = time.monotonic() + 5
        while len(chosen) < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert chosen[1:] == [torch.device("cuda:2")]  # on the feeder's own thread, before it fetches
    finally:
        feeder.close()


def test_close_stops_a_feeder_blocked_on_a_full_queue_and_counts_its_cpu():
    feeder = Feeder(lambda: sum(range(10_000)), depth=1)
    time.sleep(0.2)
    assert feeder.close(timeout=5.0) and not feeder.thread.is_alive()
    assert feeder.cpu_s > 0


class _Direct:
    """A replay actor handle that answers in-process, one call at a time as a Ray actor
    does: ``handle.method.remote(*args)`` calls the server and returns its answer."""

    def __init__(self, server):
        self.server, self.lock = server, threading.Lock()

    def __getattr__(self, name):
        fn = getattr(self.server, name)

        def remote(*args):
            with self.lock:
                return fn(*args)

        return type("Method", (), {"remote": staticmethod(remote)})


def test_the_fleets_feeder_delivers_batches_and_every_priority_reaches_the_replay(tmp_path, monkeypatch):
    """Fleet.next_batch with --feed mirror runs on the feeder thread while this (the
    learner's) thread hands priorities back; none is lost between the two threads."""
    import numpy as np

    import learner.fleet as fleet_module
    from actors.builder import build_actor_core
    from common.config import Config, EnvConfig, LearnerConfig, ReplayConfig, resolve
    from common.envs import describe_env
    from common.messages import encode_step_batch
    from replay_server.remote import ReplayServer

    received = []

    class CountingServer(ReplayServer):
        def sample_indices(self, batch_size, beta=0.4, position=None, priorities=None):
            if priorities is not None:
                received.extend(priorities[0].tolist())
            return super().sample_indices(batch_size, beta, position, priorities)

        def update_priorities(self, ids, priorities):
            received.extend(ids.tolist())
            return super().update_priorities(ids, priorities)

    monkeypatch.setattr(fleet_module.ray, "get", lambda ref, timeout=None: ref)  # learner.feed's ray too
    spec = describe_env("CartPole-v1")
    cfg = resolve(
        Config(
            env=EnvConfig(env_id="CartPole-v1", envs_per_actor=4),
            replay=ReplayConfig(replay_capacity=2_000, learning_starts=64, replay_ratio=0.0),
            learner=LearnerConfig(batch_size=16, feed="mirror", device="cpu"),
        ),
        atari=False,
        cuda=False,
    )
    server = CountingServer(capacity=2_000, stack_size=spec.stack_size, n_step=cfg.replay.n_step, gamma=0.99, seed=0)
    core = build_actor_core(cfg, 0)
    while server.stats()["items_sampleable"] < 500:
        for batch in core.step():
            server.add(encode_step_batch(batch))
    fleet = fleet_module.Fleet(cfg, spec, tmp_path)
    handle = _Direct(server)
    fleet.replays, fleet.shard_sizes = [handle], np.ones(1)
    sent, got = [], 0
    try:
        while got < 60:
            answer = fleet.next_batch(16, 0.4)
            if answer is None:
                continue
            shard, batch = answer
            assert shard == 0 and batch.obs.shape[0] == len(batch.ids) == 16
            fleet.update_priorities(shard, batch.ids, np.full(16, 2.0, dtype=np.float32))
            sent.extend(batch.ids.tolist())
            got += 1
            if got % 10 == 0:  # new records between batches, as the actors send them
                for b in core.step():
                    handle.add.remote(encode_step_batch(b))
    finally:
        fleet.close_feeder()
    fleet.save_snapshots(wait=False)  # hands over what is still held, as at a snapshot
    assert sorted(received) == sorted(sent)
