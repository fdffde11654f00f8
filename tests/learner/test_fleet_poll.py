"""The fleet's poll, without Ray: fake handles and references stand in for Ray's, so the
test controls which answers have come. A poll must never wait on an answer that has not
come, keep at most one stats request in flight per actor (cumulative counts then arrive in
order), and the last poll at stop must include what the actors did after earlier requests."""

from __future__ import annotations

import pytest

import learner.fleet as fleet_module
from common.config import Config
from common.envs import describe_env
from replay_server.remote import ReplayServer


class Ref:
    def __init__(self, value=None):
        self.value, self.ready = value, False


class FakeActor:
    """``stats.remote()`` returns a reference to its cumulative steps at the time it is asked."""

    def __init__(self, index: int):
        self.index, self.steps, self.requests = index, 0, []
        self.answers_at_once = False
        self.stats = type("Method", (), {"remote": self._request})()

    def _request(self):
        self.steps += 10  # it has been working since the last request
        ref = Ref({"actor": self.index, "agent_steps": self.steps, "env_frames": self.steps, "episodes": []})
        ref.ready = self.answers_at_once
        self.requests.append(ref)
        return ref


class FakeShard:
    def __init__(self):
        self.server, self.requests = ReplayServer(capacity=64, stack_size=1, n_step=1, gamma=0.99), []
        self.stats = type("Method", (), {"remote": self._request})()

    def _request(self):
        self.requests.append(Ref(self.server.stats()))
        return self.requests[-1]


def _wait(refs, num_returns=1, timeout=None):
    return [r for r in refs if r.ready], [r for r in refs if not r.ready]


def _get(ref, timeout=None):
    assert ref.ready, "the poll waited on an answer that has not come"
    return ref.value


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setattr(fleet_module.ray, "wait", _wait)
    monkeypatch.setattr(fleet_module.ray, "get", _get)
    f = fleet_module.Fleet(Config(), describe_env("CartPole-v1"), tmp_path)
    f.actors = {0: FakeActor(0), 1: FakeActor(1)}
    f.run_refs = {0: Ref(), 1: Ref()}  # both loops running
    f.replays = [FakeShard()]
    return f


def test_a_poll_takes_only_answers_that_came_and_keeps_one_request_per_actor(fleet):
    a0, a1 = fleet.actors[0], fleet.actors[1]
    first = fleet.poll()
    assert first.actor_stats == [] and first.replay == {}  # asked, nothing answered yet
    assert len(a0.requests) == len(a1.requests) == 1 and len(fleet.replays[0].requests) == 1
    assert fleet.poll().actor_stats == []  # still busy: no second request piles up
    assert len(a0.requests) == len(a1.requests) == 1

    a0.requests[0].ready = True
    fleet.replays[0].requests[0].ready = True
    second = fleet.poll()
    assert [s["agent_steps"] for s in second.actor_stats] == [10]
    assert second.replay["capacity"] == 64  # the shard's answer, summed
    assert len(a0.requests) == 2 and len(a1.requests) == 1  # asked again only who answered
    assert len(fleet.replays[0].requests) == 2


def test_the_last_poll_waits_and_asks_again_after_the_earlier_answers(fleet):
    a0, a1 = fleet.actors[0], fleet.actors[1]
    fleet.poll()  # one request each, in flight
    for a in (a0, a1):
        for r in a.requests:
            r.ready = True
        a.answers_at_once = True  # stopped: the fresh requests are answered at once
    steps = [(s["actor"], s["agent_steps"]) for s in fleet._poll_actors(wait=True)]
    # The answers from before, then fresh ones that include what was done since, in order.
    assert steps == [(0, 10), (1, 10), (0, 20), (1, 20)]
    assert fleet.stats_refs == {}


@pytest.mark.parametrize("answered", [True, False])
def test_an_ended_loops_answer_counts_if_it_came_and_its_request_goes(fleet, answered):
    fleet.poll()  # a request to each actor in flight
    a1 = fleet.actors[1]
    a1.requests[0].ready = answered  # actor-1 answered (or not) before its loop ended
    fleet.run_refs[1].ready = True  # ... killed, say
    polled = fleet.poll()
    got = [(s["actor"], s["agent_steps"]) for s in polled.actor_stats]
    # An answer that came before the loop ended is taken (the steps it made before it
    # stopped); an unanswered request is dropped, so no answer from before the restart can
    # follow one from after.
    assert got == ([(1, 10)] if answered else [])
    assert 1 not in fleet.stats_refs and 1 in fleet.restarting and 0 in fleet.stats_refs
