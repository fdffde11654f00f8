"""The driver: starts the replay and the actors on Ray and runs the learner loop.

The learner keeps ``prefetch`` sample requests in flight, so a batch is usually waiting
when an update ends; priorities go back and weights go out without waiting for replies.
Counters (env frames, agent steps, episodes) come from the actors' cumulative stats and
are carried across ``--resume`` through the checkpoint.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.remote import make_actor_class
from common.config import Config
from common.networks import build_q_network
from common.progress import Status
from common.schedules import beta_schedule
from learner.checkpoint import checkpoint_path, save_checkpoint
from learner.dqn import DQNLearner
from learner.tensorboard import TensorBoardLogger, tags_from_episode
from replay_server.remote import make_replay_actor

log = logging.getLogger("raydqn")

METRIC_FIELDS = [
    "wall_s", "env_frames", "agent_steps", "learner_steps", "policy_version", "episodes",
    "mean_return_100", "mean_return_greedy_20", "env_frames_per_s", "agent_steps_per_s", "updates_per_s",
    "replay_size", "replay_sampleable", "replay_rejected", "loss", "mean_q", "actors_alive",
    "replay_ratio", "policy_lag", "weight_sync_age_s",
]
EPISODE_FIELDS = ["wall_s", "env_frames", "score", "agent_steps", "epsilon", "stream_id"]
STOP_EPSILON = 0.05
ACTOR_RESTART_TIMEOUT_S = 120.0
MAX_ACTOR_RESTARTS = 3  # per actor, as Ray's max_restarts for its process


class Counters:
    """What the run has done, carried across resumes."""

    def __init__(self, saved: dict | None = None):
        saved = saved or {}
        self.env_frames = int(saved.get("env_frames", 0))
        self.agent_steps = int(saved.get("agent_steps", 0))
        self.learner_steps = int(saved.get("learner_steps", 0))
        self.episodes = int(saved.get("episodes", 0))
        self.policy_version = int(saved.get("policy_version", 0))
        self.wall_s = float(saved.get("wall_s", 0.0))
        self.recent = collections.deque(saved.get("recent_returns", []), maxlen=100)
        self.recent_greedy = collections.deque(saved.get("recent_greedy_returns", []), maxlen=20)
        # Per actor, the last cumulative counts seen: restarts reset an actor's counts to 0.
        self._seen: dict[int, tuple[int, int]] = {}

    def add_actor_stats(self, s: dict) -> list[dict]:
        """Fold one actor's cumulative stats in; returns its newly finished episodes."""
        last_steps, last_frames = self._seen.get(s["actor"], (0, 0))
        steps, frames = s["agent_steps"], s["env_frames"]
        if steps < last_steps:  # the actor restarted: its count began again at 0
            last_steps, last_frames = 0, 0
        self.agent_steps += steps - last_steps
        self.env_frames += frames - last_frames
        self._seen[s["actor"]] = (steps, frames)
        for ep in s["episodes"]:
            self.episodes += 1
            self.recent.append(ep["score"])
            if ep["epsilon"] <= STOP_EPSILON:
                self.recent_greedy.append(ep["score"])
        return s["episodes"]

    def mean_return_100(self) -> float | None:
        return float(np.mean(self.recent)) if self.recent else None

    def mean_return_greedy_20(self) -> float | None:
        """Mean raw score of the last 20 episodes of streams with eps <= STOP_EPSILON."""
        return float(np.mean(self.recent_greedy)) if self.recent_greedy else None

    def to_dict(self, wall_s: float) -> dict:
        return {
            "env_frames": self.env_frames, "agent_steps": self.agent_steps,
            "learner_steps": self.learner_steps, "episodes": self.episodes,
            "policy_version": self.policy_version, "wall_s": wall_s,
            "recent_returns": list(self.recent), "recent_greedy_returns": list(self.recent_greedy),
        }


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cpu_learner_threads(cfg: Config) -> int:
    """Torch threads for a CPU learner: as asked, else the cores the local actors and
    replay leave free. With OpenMP threads on cores the actors also use, each update cost
    1.38x the CPU for no more updates/s (docs/benchmarks.md, learner efficiency)."""
    if cfg.learner.learner_threads:
        return cfg.learner.learner_threads
    cores = os.cpu_count() or 1
    if cfg.run.address is not None:  # actors live elsewhere on a cluster
        return cores
    return max(1, cores - cfg.actors.num_actors - cfg.replay.replay_shards)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, env_info: dict, resume_payload: dict | None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.env_info = env_info
        self.signature = env_info["signature"]
        self.device = pick_device(cfg.learner.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_learner_threads(cfg))
        torch.manual_seed(cfg.run.seed)
        network = build_q_network(env_info["frame_shape"], env_info["stack_size"], env_info["num_actions"])
        L = cfg.learner
        self.learner = DQNLearner(network, L.lr, L.adam_eps, L.grad_clip, L.target_update_period, self.device)
        self.counters = Counters(resume_payload["counters"] if resume_payload else None)
        if resume_payload:
            self.learner.load_state_dict(resume_payload["learner"])
            self.learner.online.to(self.device)
            self.learner.target.to(self.device)
        self.counters.learner_steps = self.learner.learner_steps
        self.last_loss = float("nan")
        self.last_mean_q = float("nan")
        self.replay_stats: dict = {}
        self.actor_stats: dict[int, dict] = {}
        self.stop_reason = ""
        self.metrics = None
        self.tb = TensorBoardLogger(run_dir)
        self.actor_restarts = 0
        self.replay_restarts = 0
        self.replay_records_lost = 0
        self.shard_stats: list[dict] = []
        self.last_snapshot = time.monotonic()
        self.restart_counts: dict[int, int] = {}
        self.restarting: dict[int, tuple] = {}  # actor -> (stats probe, deadline)
        self.last_publish = time.monotonic()

    # ---- Ray set-up -------------------------------------------------------------------
    def start_ray(self) -> bool:
        """Join or start Ray; returns True if this process started it (and must stop it)."""
        if ray.is_initialized():
            return False
        r = self.cfg.run
        # A namespace per run keeps the parts' names (replay-0, actor-7) apart on a shared cluster.
        kwargs = dict(address=r.address, namespace=f"raydqn-{self.run_dir.name}", logging_level=logging.WARNING, log_to_driver=True)
        if r.address is None:
            # Always a new local instance: address=None would join whatever Ray instance
            # already runs on this machine (another run, a test) and then fail on num_cpus.
            kwargs["address"] = "local"
            # As many logical CPUs as the run needs, so 16 actors on a 4-core laptop share
            # the cores instead of waiting forever to be placed.
            need = self.cfg.actors.num_actors + self.cfg.replay.replay_shards
            kwargs["num_cpus"] = r.num_cpus or max(os.cpu_count() or 1, need)
            kwargs["include_dashboard"] = None
            # Ray starts workers at nice 15; on cores the learner (nice 0) shares with the
            # actors, that starved the actors (measured: 0.23 of 2 cores while free-running).
            os.environ.setdefault("RAY_worker_niceness", "0")
        ctx = ray.init(**kwargs)
        self.describe_cluster(ctx.dashboard_url, kwargs["namespace"])
        return True

    def describe_cluster(self, dashboard_url: str | None, namespace: str) -> None:
        """ray.json in the run dir: where to watch this run (dashboard, Prometheus endpoint)."""
        ports = sorted({n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")})
        info = {"namespace": namespace, "dashboard_url": f"http://{dashboard_url}" if dashboard_url else None,
                "metrics_export_ports": ports}
        (self.run_dir / "ray.json").write_text(json.dumps(info, indent=2))
        if dashboard_url:
            print(f"dashboard: http://{dashboard_url} (parts named replay-K and actor-N, namespace {namespace})", flush=True)

    def check_placement(self, can_grow: bool) -> None:
        """Ask the autoscaler for what the run needs; fail clearly if it never comes."""
        c = self.cfg
        need = c.actors.num_actors + c.replay.replay_shards
        have = ray.cluster_resources().get("CPU", 0)
        if have >= need:
            return
        if not can_grow:
            raise RuntimeError(f"cannot place the run: this Ray instance has {have:g} CPUs; {c.actors.num_actors} actors and "
                               f"{c.replay.replay_shards} replay shards need {need} (raise --num-cpus or lower --num-actors)")
        from ray.autoscaler.sdk import request_resources

        print(f"waiting up to {c.run.placement_timeout:g}s for the cluster to grow from {have:g} to {need} CPUs "
              f"({c.actors.num_actors} actors + {c.replay.replay_shards} replay shards)", flush=True)
        request_resources(num_cpus=need)
        deadline = time.monotonic() + c.run.placement_timeout
        while time.monotonic() < deadline:
            time.sleep(2)
            have = ray.cluster_resources().get("CPU", 0)
            if have >= need:
                return
        raise RuntimeError(f"cannot place the run: the Ray cluster has {have:g} CPUs after {c.run.placement_timeout:g}s; "
                           f"{c.actors.num_actors} actors and {c.replay.replay_shards} replay shards need {need} "
                           f"(lower --num-actors or add worker nodes)")

    def start_parts(self) -> None:
        """K replay shards, then N actors (actor i feeds shard i mod K), all named."""
        c = self.cfg
        k = c.replay.replay_shards
        # Each shard holds 1/K of the replay and applies the ratio to its own share.
        # Replay shards sit beside the learner (the driver, on the GPU head of a cluster):
        # the learner's samples are the largest transfers in the system.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # enable_task_events=False here and on the actors: Ray's GCS otherwise records an
        # event for each of the hundreds of add/sample/priority calls a second and grew by
        # 300 MB an hour in the soak (docs/benchmarks.md).
        self.replays = [
            make_replay_actor(num_cpus=1, name=f"replay-{j}", scheduling_strategy=here, max_restarts=-1,
                              enable_task_events=False).remote(
                capacity=-(-c.replay.replay_capacity // k), stack_size=self.env_info["stack_size"],
                n_step=c.replay.n_step, gamma=c.learner.gamma, prioritized=c.replay.prioritized,
                alpha=c.replay.priority_alpha, seed=c.run.seed * 7919 + j,
                samples_per_insert=c.replay.replay_ratio or None, min_size=-(-c.replay.learning_starts // k),
                tolerance=c.replay.replay_ratio_tolerance / k,
                # A shard that Ray restarts after a crash, or a resumed run, starts from here.
                snapshot_path=str(self.snapshot_path(j)) if c.replay.snapshot_interval >= 0 else None,
            )
            for j in range(k)
        ]
        self.shard_sizes = np.zeros(k)
        self.rng = np.random.default_rng(c.run.seed)
        Actor = make_actor_class(num_cpus=1)
        cfg_dict = c.to_dict()
        # Actors spread over the nodes: each one is CPU-bound on its own envs.
        self.actors = {i: Actor.options(name=f"actor-{i}", scheduling_strategy="SPREAD").remote(cfg_dict, i, self.replays[i % k])
                       for i in range(c.actors.num_actors)}
        self.publish_weights()
        self.run_refs = {i: a.run.remote() for i, a in self.actors.items()}

    def pick_shard(self) -> int:
        """A shard drawn in proportion to its sampleable items (uniform before any stats)."""
        total = self.shard_sizes.sum()
        if len(self.shard_sizes) == 1 or total <= 0:
            return int(self.rng.integers(len(self.shard_sizes)))
        return int(self.rng.choice(len(self.shard_sizes), p=self.shard_sizes / total))

    def publish_weights(self) -> None:
        """One ray.put of the weights; every actor gets the same object reference."""
        ref = ray.put(self.learner.weights_numpy())
        for a in self.actors.values():
            a.set_weights.remote(ref, self.counters.policy_version)
        self.last_publish = time.monotonic()

    def check_actors(self) -> None:
        """Notice actors whose loop ended, and bring back the ones Ray restarts.

        Never blocks the learner: a restarting actor is probed once per stats poll until
        it answers (then it gets the current weights and its loop again), until Ray says
        it is dead for good, or until ACTOR_RESTART_TIMEOUT_S passes (then the run goes on
        with fewer actors and says so).
        """
        if self.run_refs:
            done, _ = ray.wait(list(self.run_refs.values()), num_returns=len(self.run_refs), timeout=0)
            for i in [i for i, ref in self.run_refs.items() if ref in done]:
                ref = self.run_refs.pop(i)
                try:
                    ray.get(ref)
                    log.warning("actor-%d's loop ended on its own", i)
                except ray.exceptions.RayActorError as e:
                    log.warning("actor-%d died (%s); waiting for Ray to restart it", i, type(e).__name__)
                except Exception as e:  # the loop raised: the process lives, the loop is started again
                    log.warning("actor-%d failed: %s", i, (str(e).strip().splitlines() or [type(e).__name__])[-1])
                self.restart_counts[i] = self.restart_counts.get(i, 0) + 1
                if self.restart_counts[i] > MAX_ACTOR_RESTARTS:
                    self._drop_actor(i, f"it failed {self.restart_counts[i]} times")
                    continue
                self.restarting[i] = (self.actors[i].stats.remote(), time.monotonic() + ACTOR_RESTART_TIMEOUT_S)
        for i, (probe, deadline) in list(self.restarting.items()):
            ready, _ = ray.wait([probe], timeout=0)
            if not ready:
                if time.monotonic() > deadline:
                    self._drop_actor(i, "it did not come back in time")
                continue
            try:
                stats = ray.get(probe)
            except ray.exceptions.ActorDiedError as e:
                self._drop_actor(i, f"Ray gave up on it ({type(e).__name__})")
                continue
            except Exception:  # still restarting (ActorUnavailableError and the like)
                if time.monotonic() > deadline:
                    self._drop_actor(i, "it did not come back in time")
                else:
                    self.restarting[i] = (self.actors[i].stats.remote(), deadline)
                continue
            del self.restarting[i]
            self.write_episodes(self.counters.add_actor_stats(stats))
            self.actors[i].set_weights.remote(ray.put(self.learner.weights_numpy()), self.counters.policy_version)
            self.run_refs[i] = self.actors[i].run.remote()
            self.actor_restarts += 1
            log.warning("actor-%d restarted with policy version %d", i, self.counters.policy_version)

    def _drop_actor(self, i: int, why: str) -> None:
        self.restarting.pop(i, None)
        del self.actors[i]
        log.warning("actor-%d is gone (%s); continuing with %d actors", i, why, len(self.actors))

    def poll_stats(self) -> None:
        refs = {i: self.actors[i].stats.remote() for i in self.run_refs}
        replay_refs = [r.stats.remote() for r in self.replays]
        for i, ref in refs.items():
            try:
                stats = ray.get(ref, timeout=30)
                self.write_episodes(self.counters.add_actor_stats(stats))
                self.actor_stats[i] = {k: v for k, v in stats.items() if k != "episodes"}
            except Exception as e:
                log.warning("no stats from actor-%d: %s", i, type(e).__name__)
        shards = []
        for j, ref in enumerate(replay_refs):
            try:
                sh = ray.get(ref, timeout=60)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                log.warning("replay-%d unavailable (%s); the learner waits for it", j, type(e).__name__)
                sh = dict(self.shard_stats[j], items_sampleable=0) if j < len(self.shard_stats) else None
                if sh is None:
                    raise
            if j < len(self.shard_stats) and sh["records_added"] < self.shard_stats[j]["records_added"]:
                lost = self.shard_stats[j]["records_added"] - sh["records_added"]
                self.replay_restarts += 1
                self.replay_records_lost += lost
                log.warning("replay-%d restarted from its snapshot with %d records; %d records that arrived after "
                            "the snapshot were lost", j, sh["restored_records"], lost)
            shards.append(sh)
        self.shard_stats = shards
        self.shard_sizes = np.array([sh["items_sampleable"] for sh in shards], dtype=np.float64)
        self.replay_stats = {key: sum(sh[key] for sh in shards) for key in shards[0] if isinstance(shards[0][key], (int, float))}
        if len(shards) > 1:
            self.replay_stats["shards"] = shards

    # ---- outputs -----------------------------------------------------------------------
    def snapshot_path(self, shard: int) -> Path:
        return self.run_dir / f"replay-{shard}.snapshot"

    def save(self) -> None:
        """A checkpoint, then (unless snapshots are off) every replay shard's snapshot."""
        save_checkpoint(checkpoint_path(self.run_dir), self.learner.state_dict(),
                        self.counters.to_dict(self.wall_s()), self.signature, self.cfg.to_dict())
        if self.cfg.replay.snapshot_interval >= 0:
            self.save_snapshots(wait=True)

    def save_snapshots(self, wait: bool) -> None:
        """Each shard writes its own file (atomically); ``wait=False`` lets the learner go on."""
        refs = [r.save_snapshot.remote(str(self.snapshot_path(j))) for j, r in enumerate(self.replays)]
        self.last_snapshot = time.monotonic()
        if not wait:
            return
        status = Status()
        for j, ref in enumerate(refs):
            status.update(f"writing replay snapshots: {j}/{len(refs)} shards done", force=True)
            try:
                info = ray.get(ref, timeout=600)
                log.info("replay-%d snapshot: %d records, %.0f MB in %.1f s", j, info["records"], info["bytes"] / 1e6, info["seconds"])
            except Exception as e:  # the checkpoint is written; the previous snapshot stays
                log.warning("replay-%d snapshot failed: %s", j, (str(e).strip().splitlines() or [type(e).__name__])[-1])
        status.done()

    def wall_s(self) -> float:
        return self.counters.wall_s + (time.monotonic() - self.t0)

    def write_episodes(self, episodes: list[dict]) -> None:
        """episodes.csv: one row per finished game (raw score), for plots."""
        if not episodes:
            return
        path = self.run_dir / "episodes.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=EPISODE_FIELDS)
            if new:
                w.writeheader()
            for ep in episodes:
                if self.tb is not None:
                    self.tb.log(self.counters.env_frames, tags_from_episode(ep))
                w.writerow({"wall_s": round(self.wall_s(), 2), "env_frames": self.counters.env_frames, "score": ep["score"],
                            "agent_steps": ep["agent_steps"], "epsilon": round(ep["epsilon"], 5), "stream_id": ep["stream_id"]})

    def write_metrics(self, rates: dict) -> None:
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        c = self.counters
        row = {
            "wall_s": round(self.wall_s(), 2), "env_frames": c.env_frames, "agent_steps": c.agent_steps,
            "learner_steps": self.learner.learner_steps, "policy_version": c.policy_version, "episodes": c.episodes,
            "mean_return_100": c.mean_return_100(), "mean_return_greedy_20": c.mean_return_greedy_20(),
            "replay_size": self.replay_stats.get("size", 0),
            "replay_sampleable": self.replay_stats.get("items_sampleable", 0),
            "replay_rejected": self.replay_stats.get("rejected", 0),
            "loss": self.last_loss, "mean_q": self.last_mean_q, "actors_alive": len(self.run_refs), **rates,
        }
        inserted = self.replay_stats.get("transitions_inserted", 0)
        extra = {
            "replay_ratio": self.replay_stats.get("transitions_sampled", 0) / inserted if inserted else 0.0,
            "policy_lag": c.policy_version - min((a["policy_version"] for a in self.actor_stats.values()), default=c.policy_version),
            "weight_sync_age_s": time.monotonic() - self.last_publish,
        }
        row.update(extra)
        if self.metrics is not None:
            self.metrics.update(row)
        if self.tb is not None:
            self.tb.log_metrics(row)
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)

    def progress_line(self, rates: dict, phase: str) -> str:
        c = self.counters
        score = c.mean_return_100()
        return (f"[{self.wall_s():7.0f}s] {phase:8s} frames {c.env_frames:,} ({rates['env_frames_per_s']:,.0f}/s) | "
                f"updates {self.learner.learner_steps:,} ({rates['updates_per_s']:.1f}/s) | "
                f"replay {self.replay_stats.get('size', 0):,} | episodes {c.episodes:,} | "
                f"score100 {'-' if score is None else f'{score:.1f}'} | loss {self.last_loss:.4f}")

    def write_summary(self) -> dict:
        c = self.counters
        summary = {
            "env": self.cfg.env.env_id, "env_frames": c.env_frames, "agent_steps": c.agent_steps,
            "learner_steps": self.learner.learner_steps, "episodes": c.episodes,
            "mean_return_100": c.mean_return_100(),
            "mean_return_greedy_20": c.mean_return_greedy_20(),
            "policy_version": c.policy_version, "wall_s": round(self.wall_s(), 2), "stop_reason": self.stop_reason,
            "replay": self.replay_stats,
            "actors": self.actor_stats,
            "actor_restarts": self.actor_restarts,
            "replay_restarts": self.replay_restarts,
            "replay_records_lost_at_restarts": self.replay_records_lost,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    # ---- the loop ----------------------------------------------------------------------
    def should_stop(self, run_start: float) -> bool:
        r = self.cfg.run
        if self.counters.env_frames >= r.total_env_frames:
            self.stop_reason = "total_env_frames"
        elif r.total_learner_steps and self.learner.learner_steps >= r.total_learner_steps:
            self.stop_reason = "total_learner_steps"
        elif r.time_limit and time.monotonic() - run_start >= r.time_limit:
            self.stop_reason = "time_limit"
        elif (r.stop_return is not None and len(self.counters.recent_greedy) == self.counters.recent_greedy.maxlen
              and np.mean(self.counters.recent_greedy) >= r.stop_return):
            self.stop_reason = "stop_return"
        elif not self.run_refs and not self.restarting:
            self.stop_reason = "no actors left"
        return bool(self.stop_reason)

    def run(self) -> dict:
        self.t0 = time.monotonic()
        started_ray = self.start_ray()
        # SIGTERM (ray job stop, kill, a scheduler) ends the run like Ctrl-C: checkpoint
        # first. Installed after ray.init, whose core worker sets a handler of its own.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        tty = sys.stdout.isatty()
        try:
            self.check_placement(can_grow=self.cfg.run.address is not None)
            from learner.ray_metrics import DriverMetrics

            self.metrics = DriverMetrics(self.run_dir.name)
            print(f"starting {self.cfg.actors.num_actors} actors and {self.cfg.replay.replay_shards} replay shard(s); "
                  f"training begins once the replay holds {self.cfg.replay.learning_starts:,} transitions", flush=True)
            self.start_parts()
            self._loop(tty)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
            print("\ninterrupted: saving a checkpoint", flush=True)
        finally:
            if hasattr(self, "actors"):
                self._shutdown_parts()
            if hasattr(self, "replays"):
                self.save()
                summary = self.write_summary()
            else:
                summary = {}
            self.tb.close()
            if started_ray:
                ray.shutdown()
        return summary

    def _shutdown_parts(self) -> None:
        for a in self.actors.values():
            a.stop.remote()
        try:
            if self.run_refs:
                ray.wait(list(self.run_refs.values()), num_returns=len(self.run_refs), timeout=10)
            self.poll_stats()
        except Exception as e:  # the summary still gets written from what is known
            log.warning("final stats incomplete: %s", type(e).__name__)

    def _loop(self, tty: bool) -> None:
        cfg = self.cfg
        B, starts = cfg.learner.batch_size, cfg.replay.learning_starts
        run_start = time.monotonic()
        last_log = last_poll = run_start
        last_counts = (self.counters.env_frames, self.counters.agent_steps, self.learner.learner_steps, run_start)
        pending: collections.deque = collections.deque()
        start_frames = self.counters.env_frames
        while True:
            now = time.monotonic()
            if now - last_poll >= min(1.0, cfg.run.log_interval):
                last_poll = now
                self.poll_stats()
                self.check_actors()
                if self.should_stop(run_start):
                    break
            if now - last_log >= cfg.run.log_interval:
                f0, s0, u0, t0 = last_counts
                dt = max(now - t0, 1e-9)
                rates = {"env_frames_per_s": (self.counters.env_frames - f0) / dt,
                         "agent_steps_per_s": (self.counters.agent_steps - s0) / dt,
                         "updates_per_s": (self.learner.learner_steps - u0) / dt}
                last_counts = (self.counters.env_frames, self.counters.agent_steps, self.learner.learner_steps, now)
                last_log = now
                self.write_metrics(rates)
                phase = "training" if self.learner.learner_steps else "warm-up"
                print(("\r" if tty else "") + self.progress_line(rates, phase), end="" if tty else "\n", flush=True)
            if self.replay_stats.get("items_sampleable", 0) < starts:
                time.sleep(0.05)
                continue
            progress = (self.counters.env_frames - start_frames) / max(cfg.run.total_env_frames - start_frames, 1)
            beta = beta_schedule(progress, cfg.replay.priority_beta_start)
            while len(pending) < cfg.learner.prefetch:
                shard = self.pick_shard()
                pending.append((shard, self.replays[shard].sample.remote(B, beta)))
            shard, ref = pending.popleft()
            try:
                batch = ray.get(ref)
            except ray.exceptions.RayActorError:  # the shard is restarting: wait, ask again
                time.sleep(0.2)
                continue
            if batch is None:  # the rate limiter holds the learner until actors catch up
                time.sleep(0.002)
                continue
            out = self.learner.update(batch)
            self.replays[shard].update_priorities.remote(batch.ids, out["priorities"])
            self.last_loss, self.last_mean_q = out["loss"], out["mean_q"]
            steps = self.learner.learner_steps
            self.counters.learner_steps = steps
            if steps % cfg.learner.publish_period == 0:
                self.counters.policy_version += 1
                self.publish_weights()
            if steps % cfg.learner.checkpoint_period == 0:
                self.save()
            elif cfg.replay.snapshot_interval > 0 and time.monotonic() - self.last_snapshot >= cfg.replay.snapshot_interval:
                self.save_snapshots(wait=False)
            if cfg.run.total_learner_steps and steps >= cfg.run.total_learner_steps:
                self.stop_reason = "total_learner_steps"
                break
        if tty:
            print()
