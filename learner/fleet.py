"""The fleet: the Ray parts of a run (actors, replay shards, evaluator) and their supervision.

A :class:`Fleet` starts (or joins) Ray (``learner/ray_setup.py``), places the replay shards
beside the learner and spreads the actors, publishes weights with one ``ray.put``, brings
back actors that Ray restarts, triggers replay snapshots, runs the evaluator and reports
what it polled as a :class:`FleetPoll`. The batches and the priorities go through its
:class:`learner.feed.Feed` (prefetch, the mirror feed, held priorities, the feeder). It
writes no file but ``ray.json`` (where to watch the run); the trainer turns what it reports
into counters and the run log.

The trainer talks to it through :class:`learner.fleet_protocol.TrainerFleet`, which
``tests/support/fake_fleet.py`` also implements, over an in-process replay, to test the
loop without Ray.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import ray

from actors.remote import actors_summary, make_actor_class
from common.config import Config
from common.env_spec import EnvSpec
from common.progress import Status
from learner.feed import MAX_HELD_PRIORITIES, Feed  # noqa: F401  (MAX_HELD_PRIORITIES: its importers)
from learner.fleet_protocol import FleetPoll
from learner.ray_setup import PlacementError, check_placement, last_line, start_ray, start_shard
from learner.shards import snapshot_path

__all__ = ["Fleet", "FleetPoll", "PlacementError", "snapshot_path"]

log = logging.getLogger("raydqn")
ACTOR_RESTART_TIMEOUT_S = 120.0
MAX_ACTOR_RESTARTS = 3  # per actor, as Ray's max_restarts for its process


def _in_feed(name: str) -> property:
    """A fleet attribute that is its feed's attribute ``name``."""
    return property(lambda self: getattr(self.feed, name), lambda self, value: setattr(self.feed, name, value))


class Fleet:
    def __init__(self, cfg: Config, spec: EnvSpec, run_dir: Path):
        self.cfg = cfg
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.namespace = f"raydqn-{self.run_dir.name}"
        self.started_ray = False
        self.feed = Feed(cfg, np.random.default_rng(cfg.run.seed))
        self.actors: dict[int, object] = {}
        self.run_refs: dict[int, ray.ObjectRef] = {}
        self.restarting: dict[int, tuple] = {}  # actor -> (stats probe, deadline)
        self.restart_counts: dict[int, int] = {}
        self.shard_stats: list[dict] = []
        self.stats_refs: dict[int, ray.ObjectRef] = {}  # actor -> its stats request not yet answered
        self.description_refs: list | None = None  # the actors' acting networks, announced once
        self.replay_stats_refs: list | None = None  # the shards' stats requests not yet answered
        self.weights_ref = None
        self.policy_version = 0
        self.global_agent_steps = 0
        self.actor_restarts = 0
        self.replay_restarts = 0
        self.replay_records_lost = 0
        self.restore_errors_shown: set[str] = set()
        self.last_snapshot = time.monotonic()
        self.gauges = None
        self.evaluator = None
        self.eval_ref = None  # the evaluation in flight, if any
        self.eval_weights_ref = None  # the weights it plays with
        self.evaluated_ref = None  # the weights of the newest finished evaluation

    # The shards' handles and what the feed knows of them live in the feed.
    replays = _in_feed("replays")
    shard_sizes = _in_feed("shard_sizes")
    mirrors = _in_feed("mirrors")
    feeder = _in_feed("feeder")

    @property
    def feed_stalled_s(self) -> float:
        """Seconds without a batch while asked, for a reason other than the rate limiter
        (0.0 otherwise); :attr:`feed_waiting_on` says what the feed waits on."""
        return self.feed.stalled_s

    @property
    def feed_waiting_on(self) -> str:
        return self.feed.waiting_on

    # ---- start ---------------------------------------------------------------------
    def start(self, weights: dict, policy_version: int, agent_steps: int = 0) -> None:
        """Ray, placement, the replay shards and the actors (acting with ``weights``)."""
        self.started_ray = start_ray(self.cfg, self.namespace, self.run_dir)
        check_placement(self.cfg, can_grow=self.cfg.run.address is not None)
        from learner.ray_metrics import DriverMetrics

        self.gauges = DriverMetrics(self.run_dir.name)
        c = self.cfg
        print(
            f"starting {c.actors.num_actors} actors and {c.replay.replay_shards} replay shard(s); "
            f"training begins once the replay holds {c.replay.learning_starts:,} transitions",
            flush=True,
        )
        self.replays = [
            start_shard(self.cfg, self.spec.stack_size, self.run_dir, j) for j in range(c.replay.replay_shards)
        ]
        Actor = make_actor_class(num_cpus=1)
        cfg_dict = c.to_dict()
        k = len(self.replays)
        # Actors spread over the nodes: each one is CPU-bound on its own envs. Each finds its
        # shard by name: a handle among an actor's constructor arguments lives in the object
        # store, and Ray logs an error for each such restartable actor.
        self.actors = {
            i: Actor.options(name=f"actor-{i}", scheduling_strategy="SPREAD").remote(cfg_dict, i, f"replay-{i % k}")
            for i in range(c.actors.num_actors)
        }
        self.publish(weights, policy_version, agent_steps)
        self.run_refs = {i: a.run.remote() for i, a in self.actors.items()}
        self.description_refs = [a.describe.remote() for a in self.actors.values()]
        if self._eval_enabled():
            from learner.evaluator import Evaluator

            # Its own process: on a GPU box it takes a spare core; on a small machine it
            # plays in bursts, one evaluation every --eval-period env frames.
            self.evaluator = (
                ray.remote(num_cpus=1, max_restarts=1, enable_task_events=False)(Evaluator)
                .options(name="evaluator")
                .remote(cfg_dict)
            )

    def _eval_enabled(self) -> bool:
        return bool(self.cfg.eval.eval_period)

    # ---- the learner's side (learner/feed.py) ------------------------------------------
    def next_batch(self, batch_size: int, beta: float):
        """``(shard, SampleBatch)``, or None when there is nothing to train on yet."""
        return self.feed.next_batch(batch_size, beta)

    def update_priorities(self, shard: int, ids: np.ndarray, priorities: np.ndarray) -> None:
        self.feed.update_priorities(shard, ids, priorities)

    def publish(self, weights: dict, policy_version: int, agent_steps: int) -> None:
        """One ray.put of the weights; every actor gets the same object reference, with the
        run's agent-step count (a restarted actor's ε schedule carries on from it)."""
        self.weights_ref = ray.put(weights)
        self.policy_version, self.global_agent_steps = policy_version, agent_steps
        for a in self.actors.values():
            a.set_weights.remote(self.weights_ref, policy_version, agent_steps)

    def request_eval(self, run_counters: dict, index: int) -> bool:
        """Start an evaluation of the weights last published, unless one is still running."""
        if self.evaluator is None or self.eval_ref is not None or self.weights_ref is None:
            return False
        self.eval_ref = self.evaluator.evaluate.remote(self.weights_ref, self.policy_version, run_counters, index)
        self.eval_weights_ref = self.weights_ref
        return True

    def evaluated_weights(self) -> dict:
        """The weights the newest finished evaluation played with (a new best is kept in best.pt)."""
        return ray.get(self.evaluated_ref)

    def _finished_evals(self) -> list[dict]:
        if self.eval_ref is None or not ray.wait([self.eval_ref], timeout=0)[0]:
            return []
        ref, self.eval_ref = self.eval_ref, None
        try:
            result = ray.get(ref)
            self.evaluated_ref = self.eval_weights_ref
            return [result]
        except Exception as e:  # an evaluation that failed is skipped; the next one is asked for as usual
            log.warning("evaluation failed: %s", last_line(e))
            return []

    def save_snapshots(self, wait: bool) -> None:
        """Each shard writes its own file (atomically); ``wait=False`` lets the learner go on."""
        self.feed.send_held_priorities()  # held for a sample request: they belong in the snapshot
        refs = [r.save_snapshot.remote(str(snapshot_path(self.run_dir, j))) for j, r in enumerate(self.replays)]
        self.last_snapshot = time.monotonic()
        if not wait:
            return
        status = Status()
        for j, ref in enumerate(refs):
            status.update(f"writing replay snapshots: {j}/{len(refs)} shards done", force=True)
            try:
                info = ray.get(ref, timeout=600)
                log.info(
                    "replay-%d snapshot: %d records, %.0f MB in %.1f s",
                    j,
                    info["records"],
                    info["bytes"] / 1e6,
                    info["seconds"],
                )
            except Exception as e:  # the checkpoint is written; the previous snapshot stays
                log.warning("replay-%d snapshot failed: %s", j, last_line(e))
        status.done()

    # ---- polling -------------------------------------------------------------------------
    def poll(self) -> FleetPoll:
        """Stats of the actors and shards, and any actor brought back since the last poll.

        Never waits on a busy part: a poll takes the answers to the previous poll's requests
        that have come and asks again, so what it reports is about one poll old (an actor in
        the middle of its step batch, or a shard with messages queued ahead, answers a poll
        later instead of holding the learner up)."""
        stats = self._poll_actors(wait=False)
        replay = self._poll_replays(wait=False)
        self._announce_actors()
        stats += self._check_actors()
        return FleetPoll(stats, replay, len(self.run_refs), len(self.restarting), self._finished_evals())

    def _announce_actors(self) -> None:
        """Once every actor has described its acting network: one line for all of them."""
        refs = self.description_refs
        if not refs or len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
            return
        self.description_refs = None
        try:
            print(actors_summary(ray.get(refs)), flush=True)
        except ray.exceptions.RayError:  # an actor died before it answered: its restart says more
            return

    def _poll_actors(self, wait: bool = True) -> list[dict]:
        """Each running actor's cumulative stats, at most one request in flight per actor (so
        they come in order). ``wait=False``: the answers that have come, then a request to
        every actor without one. ``wait=True`` (the last poll): every answer, then fresh ones,
        which include what the actors did after the earlier requests."""
        out = self._take_actor_stats(wait)
        for i in self.run_refs:
            if i not in self.stats_refs:
                self.stats_refs[i] = self.actors[i].stats.remote()
        return out + self._take_actor_stats(True) if wait else out

    def _take_actor_stats(self, wait: bool) -> list[dict]:
        refs = self.stats_refs
        if not refs:
            return []
        ready = set(refs.values()) if wait else set(ray.wait(list(refs.values()), num_returns=len(refs), timeout=0)[0])
        out = []
        for i, ref in list(refs.items()):
            if ref not in ready:
                continue
            del refs[i]
            try:
                out.append(ray.get(ref, timeout=30))
            except Exception as e:
                log.warning("no stats from actor-%d: %s", i, type(e).__name__)
        return out

    def _poll_replays(self, wait: bool = True) -> dict:
        """The shards' stats summed (per shard too when there are several); {} while the
        answers to the previous poll's requests have not all come (``wait=False``)."""
        refs = self.replay_stats_refs
        if wait or refs is None:
            refs = [r.stats.remote() for r in self.replays]
        if not wait and len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
            self.replay_stats_refs = refs
            return {}
        self.replay_stats_refs = None if wait else [r.stats.remote() for r in self.replays]
        shards = [self._shard_stats(j, ref) for j, ref in enumerate(refs)]
        self.shard_stats = shards
        self.shard_sizes = np.array([sh["items_sampleable"] for sh in shards], dtype=np.float64)
        totals = {key: sum(sh[key] for sh in shards) for key in shards[0] if isinstance(shards[0][key], (int, float))}
        if len(shards) > 1:
            totals["shards"] = shards
        return totals

    def _shard_stats(self, j: int, ref) -> dict:
        """Shard j's stats; its last known stats (nothing sampleable) while it restarts."""
        try:
            sh = ray.get(ref, timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
            log.warning("replay-%d unavailable (%s); the learner waits for it", j, type(e).__name__)
            if j >= len(self.shard_stats):
                raise
            return dict(self.shard_stats[j], items_sampleable=0)
        if sh.get("restore_error") and sh["restore_error"] not in self.restore_errors_shown:
            # The shard logs this inside its worker; the user must see it here, once.
            self.restore_errors_shown.add(sh["restore_error"])
            print(f"replay-{j}: snapshot unusable, starting empty: {sh['restore_error']}", flush=True)
        if j < len(self.shard_stats) and sh["records_added"] < self.shard_stats[j]["records_added"]:
            lost = self.shard_stats[j]["records_added"] - sh["records_added"]
            self.replay_restarts += 1
            self.replay_records_lost += lost
            log.warning(
                "replay-%d restarted from its snapshot with %d records; %d records that arrived after "
                "the snapshot were lost",
                j,
                sh["restored_records"],
                lost,
            )
        return sh

    # ---- supervision -----------------------------------------------------------------------
    def _check_actors(self) -> list[dict]:
        """Notice actors whose loop ended, and bring back the ones Ray restarts; returns the
        stats of those that came back.

        Never blocks the learner: a restarting actor is probed once per poll until it
        answers (then it gets the current weights and its loop again), until Ray says it is
        dead for good, or until ACTOR_RESTART_TIMEOUT_S passes (then the run goes on with
        fewer actors and says so).
        """
        self._notice_ended_loops()
        back = []
        for i, (probe, deadline) in list(self.restarting.items()):
            stats = self._probe(i, probe, deadline)
            if stats is None:
                continue
            del self.restarting[i]
            back.append(stats)
            self.actors[i].set_weights.remote(self.weights_ref, self.policy_version, self.global_agent_steps)
            self.run_refs[i] = self.actors[i].run.remote()
            self.actor_restarts += 1
            log.warning("actor-%d restarted with policy version %d", i, self.policy_version)
        return back

    def _notice_ended_loops(self) -> None:
        if not self.run_refs:
            return
        done, _ = ray.wait(list(self.run_refs.values()), num_returns=len(self.run_refs), timeout=0)
        for i in [i for i, ref in self.run_refs.items() if ref in done]:
            ref = self.run_refs.pop(i)
            # Its stats request goes too: the probe below asks again, and an answer from before
            # the restart arriving after one from after would count its steps twice.
            self.stats_refs.pop(i, None)
            try:
                ray.get(ref)
                log.warning("actor-%d's loop ended on its own", i)
            except ray.exceptions.RayActorError as e:
                log.warning("actor-%d died (%s); waiting for Ray to restart it", i, type(e).__name__)
            except Exception as e:  # the loop raised: the process lives, the loop is started again
                log.warning("actor-%d failed: %s", i, last_line(e))
            self.restart_counts[i] = self.restart_counts.get(i, 0) + 1
            if self.restart_counts[i] > MAX_ACTOR_RESTARTS:
                self._drop_actor(i, f"it failed {self.restart_counts[i]} times")
                continue
            self.restarting[i] = (self.actors[i].stats.remote(), time.monotonic() + ACTOR_RESTART_TIMEOUT_S)

    def _probe(self, i: int, probe, deadline: float) -> dict | None:
        """The restarting actor's stats once it answers; None while it has not (yet)."""
        ready, _ = ray.wait([probe], timeout=0)
        if not ready:
            if time.monotonic() > deadline:
                self._drop_actor(i, "it did not come back in time")
            return None
        try:
            return ray.get(probe)
        except ray.exceptions.ActorDiedError as e:
            self._drop_actor(i, f"Ray gave up on it ({type(e).__name__})")
        except Exception:  # still restarting (ActorUnavailableError and the like)
            if time.monotonic() > deadline:
                self._drop_actor(i, "it did not come back in time")
            else:
                self.restarting[i] = (self.actors[i].stats.remote(), deadline)
        return None

    def _drop_actor(self, i: int, why: str) -> None:
        self.restarting.pop(i, None)
        del self.actors[i]
        log.warning("actor-%d is gone (%s); continuing with %d actors", i, why, len(self.actors))

    # ---- stop ------------------------------------------------------------------------------
    def stop(self) -> FleetPoll | None:
        """Stop the feeder and the actors (each flushes what it holds), let them finish,
        poll once more."""
        self.close_feeder()
        if not self.actors:
            return None
        for a in self.actors.values():
            a.stop.remote()
        try:
            if self.run_refs:
                ray.wait(list(self.run_refs.values()), num_returns=len(self.run_refs), timeout=10)
            if self.eval_ref is not None:  # an evaluation under way is worth its wait: it is the run's last word
                ray.wait([self.eval_ref], timeout=120)
            return FleetPoll(self._poll_actors(), self._poll_replays(), 0, 0, self._finished_evals())
        except Exception as e:  # the summary still gets written from what is known
            log.warning("final stats incomplete: %s", type(e).__name__)
            return None

    @property
    def started(self) -> bool:
        return bool(self.replays)

    def close_feeder(self) -> None:
        self.feed.close_feeder()

    def shutdown(self) -> None:
        self.close_feeder()
        if self.started_ray:
            ray.shutdown()
