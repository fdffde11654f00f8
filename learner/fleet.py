"""The fleet: every Ray call the driver makes, and nothing else.

A :class:`Fleet` starts (or joins) Ray, places the replay shards beside the learner and
spreads the actors, keeps ``prefetch`` sample requests in flight, routes priorities back
to the shard a batch came from, publishes weights with one ``ray.put``, brings back actors
that Ray restarts, triggers replay snapshots and reports what it polled as a
:class:`FleetPoll`. It writes no file but ``ray.json`` (where to watch the run); the
trainer turns what it reports into counters and the run log.

The trainer talks to it through a small interface (``start``, ``next_batch``,
``update_priorities``, ``publish``, ``poll``, ``save_snapshots``, ``stop``), which
``tests/learner/fake_fleet.py`` implements over an in-process replay to test the loop
without Ray.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.remote import make_actor_class
from common.config import Config
from common.env_spec import EnvSpec
from common.progress import Status
from replay_server.remote import make_replay_actor

log = logging.getLogger("raydqn")
ACTOR_RESTART_TIMEOUT_S = 120.0
MAX_ACTOR_RESTARTS = 3  # per actor, as Ray's max_restarts for its process
MAX_HELD_PRIORITIES = 8  # priority batches held for a shard's next sample request (mirror feed)


class PlacementError(RuntimeError):
    """The cluster cannot hold the run (too few CPUs, even after asking the autoscaler)."""


@dataclasses.dataclass
class FleetPoll:
    """What one poll saw. ``actor_stats``: each answering actor's cumulative stats (with
    the games it finished since the last poll); ``replay``: the shards' counters summed
    (and per shard under ``shards`` when there are several)."""

    actor_stats: list[dict]
    replay: dict
    actors_alive: int
    actors_restarting: int
    evals: list[dict] = dataclasses.field(default_factory=list)  # evaluations finished since the last poll


def snapshot_path(run_dir: Path, shard: int) -> Path:
    return Path(run_dir) / f"replay-{shard}.snapshot"


def _joined(held: list) -> tuple[np.ndarray, np.ndarray]:
    """Held (ids, priorities) pairs as one pair."""
    return np.concatenate([i for i, _ in held]), np.concatenate([p for _, p in held])


def _last_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1]


class Fleet:
    def __init__(self, cfg: Config, spec: EnvSpec, run_dir: Path):
        self.cfg = cfg
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.namespace = f"raydqn-{self.run_dir.name}"
        self.started_ray = False
        self.replays: list = []
        self.actors: dict[int, object] = {}
        self.run_refs: dict[int, ray.ObjectRef] = {}
        self.restarting: dict[int, tuple] = {}  # actor -> (stats probe, deadline)
        self.restart_counts: dict[int, int] = {}
        self.pending: collections.deque = collections.deque()  # (shard, sample ref)
        self.mirrors: dict = {}  # shard -> learner.mirror.FrameMirror, with --feed mirror
        self.held_priorities: dict[int, list] = {}  # shard -> [(ids, priorities)] for its next request
        self.held_lock = threading.Lock()  # the learner's thread holds priorities, the feeder's sends them
        self.feeder = None  # learner.feeder.Feeder, with --feed mirror
        self.beta = 0.4  # the importance-sampling exponent the feeder's requests carry
        self.shard_stats: list[dict] = []
        self.stats_refs: dict[int, ray.ObjectRef] = {}  # actor -> its stats request not yet answered
        self.replay_stats_refs: list | None = None  # the shards' stats requests not yet answered
        self.shard_sizes = np.zeros(cfg.replay.replay_shards)
        self.rng = np.random.default_rng(cfg.run.seed)
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

    # ---- start ---------------------------------------------------------------------
    def start(self, weights: dict, policy_version: int, agent_steps: int = 0) -> None:
        """Ray, placement, the replay shards and the actors (acting with ``weights``)."""
        self._start_ray()
        self._check_placement(can_grow=self.cfg.run.address is not None)
        from learner.ray_metrics import DriverMetrics

        self.gauges = DriverMetrics(self.run_dir.name)
        c = self.cfg
        print(
            f"starting {c.actors.num_actors} actors and {c.replay.replay_shards} replay shard(s); "
            f"training begins once the replay holds {c.replay.learning_starts:,} transitions",
            flush=True,
        )
        self.replays = [self._start_shard(j) for j in range(c.replay.replay_shards)]
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

    def _start_ray(self) -> None:
        if ray.is_initialized():
            return
        r = self.cfg.run
        # A namespace per run keeps the parts' names (replay-0, actor-7) apart on a shared cluster.
        kwargs = dict(address=r.address, namespace=self.namespace, logging_level=logging.WARNING, log_to_driver=True)
        if r.address is None:
            # Always a new local instance: address=None would join whatever Ray instance
            # already runs on this machine (another run, a test) and then fail on num_cpus.
            kwargs["address"] = "local"
            # As many logical CPUs as the run needs, so 16 actors on a 4-core laptop share
            # the cores instead of waiting forever to be placed.
            kwargs["num_cpus"] = r.num_cpus or max(os.cpu_count() or 1, self._cpus_needed())
            kwargs["include_dashboard"] = None
            # Ray starts workers at nice 15; on cores the learner (nice 0) shares with the
            # actors, that starved the actors (measured: 0.23 of 2 cores while free-running).
            os.environ.setdefault("RAY_worker_niceness", "0")
            # A quiet start. Ray's token authentication stays on, without its warning that
            # it turned itself on (setting RAY_AUTH_MODE here is too late: Ray has read it at
            # import). The raylet warns once 4x its start-up concurrency (min(cores, CPUs): 2
            # here) of workers have started, i.e. at 16 actors on 2 cores, which this run asks
            # for on purpose: its limit is the run's CPUs.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(kwargs["num_cpus"]))
        try:
            ctx = ray.init(**kwargs)
        except (ConnectionError, RuntimeError) as e:
            if r.address is None:
                raise
            # The cluster went away after main's probe, or is not one Ray can join.
            raise PlacementError(f"--address={r.address}: cannot join the Ray cluster ({_last_line(e)})") from None
        self.started_ray = True
        self._describe_cluster(ctx.dashboard_url)

    def _describe_cluster(self, dashboard_url: str | None) -> None:
        """ray.json in the run dir: where to watch this run (dashboard, Prometheus endpoint)."""
        ports = sorted(
            {n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")}
        )
        info = {
            "namespace": self.namespace,
            "dashboard_url": f"http://{dashboard_url}" if dashboard_url else None,
            "metrics_export_ports": ports,
            # Where a tool (the soak, a state query) joins this very instance: 'auto' finds the
            # newest one on the machine, which need not be this run's.
            "gcs_address": ray.get_runtime_context().gcs_address,
        }
        (self.run_dir / "ray.json").write_text(json.dumps(info, indent=2))
        if dashboard_url:
            print(
                f"dashboard: http://{dashboard_url} (parts named replay-K and actor-N, namespace {self.namespace})",
                flush=True,
            )

    def _cpus_needed(self) -> int:
        return self.cfg.actors.num_actors + self.cfg.replay.replay_shards + int(self._eval_enabled())

    def _check_placement(self, can_grow: bool) -> None:
        """Ask the autoscaler for what the run needs; fail clearly if it never comes."""
        c, need = self.cfg, self._cpus_needed()
        parts = f"{c.actors.num_actors} actors and {c.replay.replay_shards} replay shards need {need}"
        have = ray.cluster_resources().get("CPU", 0)
        if have >= need:
            return
        if not can_grow:
            raise PlacementError(
                f"cannot place the run: this Ray instance has {have:g} CPUs; {parts} "
                f"(raise --num-cpus or lower --num-actors)"
            )
        from ray.autoscaler.sdk import request_resources

        print(
            f"waiting up to {c.run.placement_timeout:g}s for the cluster to grow from {have:g} to {need} CPUs "
            f"({c.actors.num_actors} actors + {c.replay.replay_shards} replay shards)",
            flush=True,
        )
        request_resources(num_cpus=need)
        deadline = time.monotonic() + c.run.placement_timeout
        while time.monotonic() < deadline:
            time.sleep(2)
            have = ray.cluster_resources().get("CPU", 0)
            if have >= need:
                return
        raise PlacementError(
            f"cannot place the run: the Ray cluster has {have:g} CPUs after {c.run.placement_timeout:g}s; "
            f"{parts} (lower --num-actors or add worker nodes)"
        )

    def _start_shard(self, j: int):
        """Shard j holds 1/K of the replay and applies the ratio to its own share. Shards sit
        beside the learner (the driver, on the GPU head of a cluster): the learner's samples
        are the largest transfers in the system."""
        c, k = self.cfg, self.cfg.replay.replay_shards
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # enable_task_events=False here and on the actors: Ray's GCS otherwise records an
        # event for each of the hundreds of add/sample/priority calls a second and grew by
        # 300 MB an hour in the soak (docs/benchmarks.md).
        return make_replay_actor(
            num_cpus=1, name=f"replay-{j}", scheduling_strategy=here, max_restarts=-1, enable_task_events=False
        ).remote(
            capacity=-(-c.replay.replay_capacity // k),
            stack_size=self.spec.stack_size,
            n_step=c.replay.n_step,
            gamma=c.learner.gamma,
            prioritized=c.replay.prioritized,
            alpha=c.replay.priority_alpha,
            seed=c.run.seed * 7919 + j,
            samples_per_insert=c.replay.replay_ratio or None,
            min_size=-(-c.replay.learning_starts // k),
            tolerance=c.replay.replay_ratio_tolerance / k,
            # A shard that Ray restarts after a crash, or a resumed run, starts from here.
            snapshot_path=str(snapshot_path(self.run_dir, j)) if c.replay.snapshot_interval >= 0 else None,
        )

    # ---- the learner's side ------------------------------------------------------------
    def next_batch(self, batch_size: int, beta: float):
        """``(shard, SampleBatch)``, or None when there is nothing to train on yet (the rate
        limiter holds the learner, or the shard is restarting). Keeps ``prefetch`` requests
        in flight, so the learner rarely waits on a round trip. With ``--feed mirror`` the
        shards answer with frame indices and the stacks are gathered from the shard's
        mirror on the learner's device (:meth:`_mirrored`), all of it on the feeder's
        thread (``learner/feeder.py``) while the learner's thread updates."""
        if self.cfg.learner.feed != "mirror":
            return self._fetch(batch_size, beta)
        self.beta = beta  # the feeder's next requests carry it (β anneals over the whole run)
        if self.feeder is None:
            from learner.feeder import Feeder

            self.feeder = Feeder(lambda: self._fetch(batch_size, self.beta))
        return self.feeder.get()

    def _fetch(self, batch_size: int, beta: float):
        """One batch, as :meth:`next_batch` describes, on the calling thread."""
        mirrored = self.cfg.learner.feed == "mirror"
        while len(self.pending) < self.cfg.learner.prefetch:
            shard = self._pick_shard()
            if mirrored:
                ref = self.replays[shard].sample_indices.remote(
                    batch_size, beta, "learner", self._take_priorities(shard)
                )
            else:
                ref = self.replays[shard].sample.remote(batch_size, beta)
            self.pending.append((shard, ref))
        shard, ref = self.pending.popleft()
        try:
            batch = ray.get(ref)
        except ray.exceptions.RayActorError:  # the shard is restarting: wait, ask again
            time.sleep(0.2)
            return None
        if mirrored:
            batch = self._mirrored(shard, batch)
        if batch is None:  # the rate limiter holds the learner until actors catch up
            time.sleep(0.002)
            return None
        return shard, batch

    def _mirrored(self, shard: int, answer):
        """Apply the answer's frames to the shard's mirror, then gather its batch there (None:
        the answer had none). Answers are handled in the order they were asked for, each
        gathered before the next one's frames go in: ``learner/mirror.py`` says why that
        is exact. A mirror that lost an answer asks its shard to send everything again."""
        from learner.mirror import FrameMirror
        from learner.trainer import pick_device

        if shard not in self.mirrors:
            capacity = -(-self.cfg.replay.replay_capacity // self.cfg.replay.replay_shards)
            self.mirrors[shard] = FrameMirror(capacity, pick_device(self.cfg.learner.device))
        mirror = self.mirrors[shard]
        if not mirror.apply(answer.delta):
            if not mirror.resync_requested:
                mirror.resync_requested = True
                log.warning("replay-%d: an answer to the mirror was lost; resending its frames", shard)
                self.replays[shard].forget_consumer.remote()
            return None
        return mirror.gather(answer) if answer.has_batch else None

    def _pick_shard(self) -> int:
        """A shard drawn in proportion to its sampleable items (uniform before any stats)."""
        total = self.shard_sizes.sum()
        if len(self.shard_sizes) == 1 or total <= 0:
            return int(self.rng.integers(len(self.shard_sizes)))
        return int(self.rng.choice(len(self.shard_sizes), p=self.shard_sizes / total))

    def update_priorities(self, shard: int, ids: np.ndarray, priorities: np.ndarray) -> None:
        """With the mirror feed, priorities ride on the shard's next sample request (one
        Ray call per update instead of two: each costs the driver ≈ 0.6 ms on 2 cores), or
        go on their own once MAX_HELD_PRIORITIES batches of them wait for a rarely drawn shard."""
        if self.cfg.learner.feed == "mirror":
            with self.held_lock:  # the feeder's next request to this shard may take them meanwhile
                held = self.held_priorities.setdefault(shard, [])
                held.append((ids, priorities))
                if len(held) < MAX_HELD_PRIORITIES:
                    return
                del self.held_priorities[shard]
            ids, priorities = _joined(held)
        self.replays[shard].update_priorities.remote(ids, priorities)

    def _take_priorities(self, shard: int) -> tuple[np.ndarray, np.ndarray] | None:
        with self.held_lock:
            held = self.held_priorities.pop(shard, None)
        return _joined(held) if held else None

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
            log.warning("evaluation failed: %s", _last_line(e))
            return []

    def save_snapshots(self, wait: bool) -> None:
        """Each shard writes its own file (atomically); ``wait=False`` lets the learner go on."""
        with self.held_lock:
            shards = list(self.held_priorities)
        for shard in shards:  # held for a sample request: they belong in the snapshot
            held = self._take_priorities(shard)
            if held is not None:
                self.replays[shard].update_priorities.remote(*held)
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
                log.warning("replay-%d snapshot failed: %s", j, _last_line(e))
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
        stats += self._check_actors()
        return FleetPoll(stats, replay, len(self.run_refs), len(self.restarting), self._finished_evals())

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
                log.warning("actor-%d failed: %s", i, _last_line(e))
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
        if self.feeder is not None and not self.feeder.close():
            log.warning("the feeder thread did not stop within 10 s (a sample request still waits)")
        self.feeder = None

    def shutdown(self) -> None:
        self.close_feeder()
        if self.started_ray:
            ray.shutdown()
