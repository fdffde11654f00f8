"""The learner's feed without Ray: plain handles and references stand in for Ray's, so the
test decides which answers are lost. With the mirror feed a lost answer, a lost reset and a
restarted shard each cost a few requests, never the feed; a feed that gives no batch for
long, for a reason other than the rate limiter, says so."""

from __future__ import annotations

import numpy as np
import pytest
import ray

import learner.feed as feed_module
from actors.builder import build_actor_core
from common.config import Config, EnvConfig, LearnerConfig, ReplayConfig, resolve
from common.envs import describe_env
from common.messages import encode_step_batch
from learner.feed import Feed, StallWatch
from learner.shards import shard_settings
from replay_server.remote import ReplayServer


class Ref:
    def __init__(self, value):
        self.value, self.lost = value, False


class Handle:
    """A replay actor handle that answers in-process, in order; ``lose`` marks the answers
    (by request number) that never arrive: ``ray.get`` raises as Ray's would."""

    def __init__(self, server):
        self.server, self.lose, self.requests = server, set(), 0

    def __getattr__(self, name):
        fn = getattr(self.server, name)

        def remote(*args):
            ref = Ref(fn(*args))
            if name == "sample_indices":
                self.requests += 1
                ref.lost = self.requests in self.lose
            return ref

        return type("Method", (), {"remote": staticmethod(remote)})


def _get(ref, timeout=None):
    if ref.lost:
        raise ray.exceptions.ActorUnavailableError("the answer was lost", b"\0" * 16)
    return ref.value


@pytest.fixture
def setup(monkeypatch):
    monkeypatch.setattr(feed_module.ray, "get", _get)
    monkeypatch.setattr(feed_module.time, "sleep", lambda s: None)
    spec = describe_env("CartPole-v1")
    cfg = resolve(
        Config(
            env=EnvConfig(env_id="CartPole-v1", envs_per_actor=4),
            replay=ReplayConfig(replay_capacity=2_000, learning_starts=64, replay_ratio=0.0),
            learner=LearnerConfig(batch_size=16, feed="mirror", device="cpu", prefetch=4),
        ),
        atari=False,
        cuda=False,
    )
    core = build_actor_core(cfg, 0)

    def new_server(snapshot_of=None):
        server = ReplayServer(**shard_settings(cfg, spec.stack_size))
        if snapshot_of is not None:
            server.load_state_dict(snapshot_of.state_dict())
        while server.stats()["items_sampleable"] < 300:
            for b in core.step():
                server.add(encode_step_batch(b))
        return server

    return cfg, new_server


def fetches_until_batches(feed, n: int, limit: int = 40) -> list[int]:
    """The fetch numbers at which the first ``n`` batches came (exactly gathered: the
    mirror checks every frame a batch names)."""
    got = []
    for k in range(1, limit + 1):
        answer = feed.fetch(16, 0.4)
        if answer is not None:
            shard, batch = answer
            assert shard == 0 and tuple(batch.obs.shape)[0] == 16
            got.append(k)
            if len(got) == n:
                return got
    raise AssertionError(f"{len(got)} batches in {limit} fetches: the feed stalled")


def feed_of(cfg, server) -> tuple[Feed, Handle]:
    feed = Feed(cfg, np.random.default_rng(0), device="cpu")
    handle = Handle(server)
    feed.replays, feed.shard_sizes = [handle], np.ones(1)
    return feed, handle


def test_a_lost_reset_costs_a_few_requests(setup):
    cfg, new_server = setup
    feed, handle = feed_of(cfg, new_server())
    handle.lose = {1}  # the first answer: the reset that fills the mirror
    assert fetches_until_batches(feed, 3)[0] <= 6


def test_lost_answers_cost_a_few_requests_each(setup):
    cfg, new_server = setup
    feed, handle = feed_of(cfg, new_server())
    fetches_until_batches(feed, 5)
    handle.lose = {handle.requests + 1, handle.requests + 6}
    got = fetches_until_batches(feed, 20)
    assert got[-1] <= 20 + 2 * 6  # each loss: its request and at most prefetch + 1 more
    assert feed.mirrors[0].in_sync


@pytest.mark.parametrize("from_snapshot", [True, False], ids=["from-its-snapshot", "empty"])
def test_a_restarted_shard_costs_a_few_requests(setup, from_snapshot):
    """Ray restarts the shard: the answers in flight fail, then a new process answers,
    restored from its snapshot (a new epoch) or empty (epoch 0, uids from 0 again)."""
    cfg, new_server = setup
    old = new_server()
    feed, handle = feed_of(cfg, old)
    fetches_until_batches(feed, 5)
    handle.lose = set(range(handle.requests + 1, handle.requests + 5))  # in flight when it died
    handle.server = new_server(snapshot_of=old if from_snapshot else None)
    got = fetches_until_batches(feed, 5)
    assert got[0] <= 4 + 6 and feed.mirrors[0].epoch == handle.server.buffer.epoch


def test_a_feed_that_gives_nothing_for_long_reports_a_stall_but_not_for_the_limiter():
    now = [0.0]
    watch = StallWatch(after_s=10.0, clock=lambda: now[0])
    for t in range(0, 30):  # the rate limiter holds the learner for 30 s: no stall
        now[0] = float(t)
        watch.asked()
        watch.waited("limiter")
    assert watch.stalled_s == 0.0 and not watch.newly_stalled()
    watch.waited("mirror")  # ... and now a mirror that gets no frames
    assert watch.stalled_s == 29.0 and watch.newly_stalled() and not watch.newly_stalled()
    watch.delivered()
    assert watch.stalled_s == 0.0 and watch.stalls == 1
    now[0] = 100.0  # the trainer stopped asking (too few items): the wait starts when it asks again
    watch.asked()
    watch.waited("shard")
    for t in range(101, 112):
        now[0] = float(t)
        watch.asked()
        assert watch.stalled_s == (0.0 if t < 110 else t - 100.0)


def test_the_fleet_reports_a_feed_stalled_by_a_shard_that_never_answers(setup, tmp_path, monkeypatch):
    import learner.fleet as fleet_module

    cfg, new_server = setup
    cfg = resolve(
        Config(env=cfg.env, replay=cfg.replay, learner=LearnerConfig(batch_size=16, feed="stacked", device="cpu")),
        atari=False,
        cuda=False,
    )
    fleet = fleet_module.Fleet(cfg, describe_env("CartPole-v1"), tmp_path)
    now = [0.0]
    fleet.feed.watch = StallWatch(after_s=10.0, clock=lambda: now[0])

    class Dead:
        def __getattr__(self, name):
            return type("Method", (), {"remote": staticmethod(lambda *a: Ref(None))})

    fleet.replays, fleet.shard_sizes = [Dead()], np.ones(1)
    monkeypatch.setattr(
        feed_module.ray, "get", lambda ref, timeout=None: (_ for _ in ()).throw(ray.exceptions.RayActorError())
    )
    for t in range(12):
        now[0] = float(t)
        assert fleet.next_batch(16, 0.4) is None
    assert fleet.feed_stalled_s == 11.0 and fleet.feed_waiting_on == "shard"
