"""The learner's loop: sample, update, send priorities back, publish, checkpoint, log.

:class:`Trainer` is given a learner (``learner.dqn.DQNLearner``), a fleet (the Ray side,
``learner.fleet.Fleet``, or a fake in tests) and a run log (``learner.run_log.RunLog``), and
keeps the run's :class:`Counters`. It holds no Ray code, so its stop conditions, publish and
checkpoint cadence and its handling of empty samples are tested in-process.

Counters (env frames, agent steps, episodes) come from the actors' cumulative stats and
are carried across ``--resume`` through the checkpoint, so schedules that follow the run's
progress (β, the linear ε) continue where they were.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from common import affinity
from common.config import Config
from common.config.hardware import cpu_learner_threads, cpu_plan, pick_device  # noqa: F401  (their importers)
from common.schedules import beta_schedule
from learner.checkpoint import BEST_NAME, checkpoint_path, save_checkpoint
from learner.evaluator import due as evaluation_due

log = logging.getLogger("raydqn")
STOP_EPSILON = 0.05


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
        self.evals = int(saved.get("evals", 0))  # evaluations finished
        self.last_eval: dict | None = saved.get("last_eval")  # the newest evaluation's result
        self.best_eval_return: float | None = saved.get("best_eval_return")
        self.eval_requested_frames: int | None = saved.get("eval_requested_frames")
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
            "env_frames": self.env_frames,
            "agent_steps": self.agent_steps,
            "learner_steps": self.learner_steps,
            "episodes": self.episodes,
            "policy_version": self.policy_version,
            "wall_s": wall_s,
            "recent_returns": list(self.recent),
            "recent_greedy_returns": list(self.recent_greedy),
            "evals": self.evals,
            "last_eval": self.last_eval,
            "best_eval_return": self.best_eval_return,
            "eval_requested_frames": self.eval_requested_frames,
        }

    def add_eval(self, result: dict) -> bool:
        """Count an evaluation; True if it is the run's best so far."""
        self.evals += 1
        self.last_eval = result
        if self.best_eval_return is None or result["mean"] > self.best_eval_return:
            self.best_eval_return = result["mean"]
            return True
        return False

    def eval_return(self) -> float | None:
        return None if self.last_eval is None else float(self.last_eval["mean"])


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class Trainer:
    """The loop. ``signature`` goes into each checkpoint (what network it holds)."""

    def __init__(self, cfg: Config, run_dir: Path, learner, fleet, run_log, counters: Counters, signature: dict):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.learner, self.fleet, self.run_log = learner, fleet, run_log
        self.counters, self.signature = counters, signature
        self.counters.learner_steps = learner.learner_steps
        self.last_loss = self.last_mean_q = float("nan")
        self.replay: dict = {}
        self.actor_stats: dict[int, dict] = {}
        self.actors_alive = self.actors_restarting = 0
        self.stop_reason = ""
        self.last_publish = time.monotonic()
        self.t0 = time.monotonic()

    # ---- one run -----------------------------------------------------------------------
    def run(self) -> dict:
        """Start the fleet, train until a stop condition, stop it, save; the summary."""
        self.t0 = time.monotonic()
        try:
            c = self.counters
            plan = cpu_plan(self.cfg)
            if plan is not None:  # before Ray starts: its workers inherit the variable
                affinity.plan_workers(plan[1])
            self.fleet.start(self.learner.weights_numpy(), c.policy_version, c.agent_steps)
            if plan is not None:  # after: Ray's own threads in this process keep every core
                affinity.pin_thread(plan[0])
                self.run_log.message(
                    f"cores: the learner on {affinity.format_cpus(plan[0])}, actors, replay and evaluator "
                    f"on {affinity.format_cpus(plan[1])} (--pin-cpus on)"
                )
            self.run_log.gauges = getattr(self.fleet, "gauges", None)
            # SIGTERM (ray job stop, kill, a scheduler) ends the run like Ctrl-C: checkpoint
            # first. Installed after Ray starts, as its core worker sets a handler of its own.
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _raise_interrupt)
            self._loop()
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
            self.run_log.message("\ninterrupted: saving a checkpoint")
        finally:
            summary = self._finish()
        return summary

    def _finish(self) -> dict:
        try:
            if self.fleet.started:
                self._flush_priorities()
            final = self.fleet.stop()
            if final is not None:
                self._absorb(final)
            if not self.fleet.started:
                return {}
            self.save()
            return self.run_log.summary(self.summary())
        finally:
            self.run_log.close()
            self.fleet.shutdown()

    def _loop(self) -> None:
        cfg, c = self.cfg, self.counters
        B, starts = cfg.learner.batch_size, cfg.replay.learning_starts
        poll_every = min(1.0, cfg.run.log_interval)
        run_start = last_poll = time.monotonic()
        rates = _Rates(c, self.learner, run_start)
        while True:
            now = time.monotonic()
            if now - last_poll >= poll_every:
                last_poll = now
                self._absorb(self.fleet.poll())
                if self.should_stop(run_start):
                    return
                self._maybe_evaluate()
            if now - rates.since >= cfg.run.log_interval:
                self.log_metrics(rates.take(now))
            if self.replay.get("items_sampleable", 0) < starts:
                time.sleep(0.05)
                continue
            got = self.fleet.next_batch(B, self.beta())
            if got is None:  # rate-limited, or a shard is restarting: nothing to train on yet
                continue
            shard, batch = got
            out = self.learner.update(batch, tag=shard)
            for handoff in out["handoff"]:  # (shard, ids, priorities): this update's, or on CUDA the last one's
                self.fleet.update_priorities(*handoff)
            self.last_loss, self.last_mean_q = out["loss"], out["mean_q"]
            self._after_update()
            if cfg.run.total_learner_steps and c.learner_steps >= cfg.run.total_learner_steps:
                self.stop_reason = "total_learner_steps"
                return

    def _after_update(self) -> None:
        """The cadences that follow the update count: publish, checkpoint, snapshot."""
        cfg, c = self.cfg, self.counters
        c.learner_steps = steps = self.learner.learner_steps
        if steps % cfg.learner.publish_period == 0:
            c.policy_version += 1
            self.fleet.publish(self.learner.weights_numpy(), c.policy_version, c.agent_steps)
            self.last_publish = time.monotonic()
        if steps % cfg.learner.checkpoint_period == 0:
            self.save()
        elif (
            cfg.replay.snapshot_interval > 0
            and time.monotonic() - self.fleet.last_snapshot >= cfg.replay.snapshot_interval
        ):
            self._flush_priorities()
            self.fleet.save_snapshots(wait=False)

    def _maybe_evaluate(self) -> None:
        """Every --eval-period env frames, once the learner has trained, the evaluator plays."""
        c, period = self.counters, self.eval_period()
        if not self.learner.learner_steps or not evaluation_due(c.env_frames, c.eval_requested_frames, period):
            return
        run = {"env_frames": c.env_frames, "agent_steps": c.agent_steps, "learner_steps": self.learner.learner_steps}
        if self.fleet.request_eval(run, c.evals):
            c.eval_requested_frames = c.env_frames

    def eval_period(self) -> int:
        return int(self.cfg.eval.eval_period or 0)

    def beta(self) -> float:
        """The importance-sampling exponent, annealed over the whole run's env frames (so a
        resumed run continues the schedule where it was)."""
        progress = self.counters.env_frames / max(self.cfg.run.total_env_frames, 1)
        return beta_schedule(progress, self.cfg.replay.priority_beta_start)

    def _absorb(self, poll) -> None:
        """Fold a fleet poll into the counters and write the games that finished."""
        for stats in poll.actor_stats:
            episodes = self.counters.add_actor_stats(stats)
            self.run_log.episodes(episodes, self.wall_s(), self.counters.env_frames)
            self.actor_stats[stats["actor"]] = {k: v for k, v in stats.items() if k != "episodes"}
        for result in poll.evals:
            if self.counters.add_eval(result):
                self.save_best(result)
            self.run_log.evaluation({"wall_s": round(self.wall_s(), 2), **result})
        if poll.replay:
            self.replay = poll.replay
        self.actors_alive, self.actors_restarting = poll.actors_alive, poll.actors_restarting

    def should_stop(self, run_start: float) -> bool:
        r, c = self.cfg.run, self.counters
        if c.env_frames >= r.total_env_frames:
            self.stop_reason = "total_env_frames"
        elif r.total_learner_steps and self.learner.learner_steps >= r.total_learner_steps:
            self.stop_reason = "total_learner_steps"
        elif r.time_limit and time.monotonic() - run_start >= r.time_limit:
            self.stop_reason = "time_limit"
        elif r.stop_return is not None and self._return_reached(r.stop_return):
            self.stop_reason = "stop_return"
        elif not self.actors_alive and not self.actors_restarting:
            self.stop_reason = "no actors left"
        return bool(self.stop_reason)

    def _return_reached(self, target: float) -> bool:
        """The evaluator's newest score reached ``target``; without an evaluator, the least-
        exploring streams' last 20 games."""
        c = self.counters
        if self.eval_period():
            return c.last_eval is not None and c.last_eval["mean"] >= target
        return len(c.recent_greedy) == c.recent_greedy.maxlen and float(np.mean(c.recent_greedy)) >= target

    # ---- outputs ------------------------------------------------------------------------
    def wall_s(self) -> float:
        return self.counters.wall_s + (time.monotonic() - self.t0)

    def _flush_priorities(self) -> None:
        """On the late-priority (CUDA) path the last update's priorities are still held: send them."""
        late = self.learner.flush()
        if late is not None:
            self.fleet.update_priorities(*late)

    def save(self) -> None:
        """A checkpoint, then (unless snapshots are off) every replay shard's snapshot; the
        last update's priorities go to the replay first, so its snapshot holds them."""
        self._flush_priorities()
        save_checkpoint(
            checkpoint_path(self.run_dir),
            self.learner.state_dict(),
            self.counters.to_dict(self.wall_s()),
            self.signature,
            self.cfg.to_dict(),
        )
        if self.cfg.replay.snapshot_interval >= 0:
            self.fleet.save_snapshots(wait=True)

    def save_best(self, result: dict) -> None:
        """best.pt: the weights the evaluator scored best with, with that evaluation, for
        ``learner.evaluate``. The run's own checkpoint.pt has moved on since (DQN's policy
        can get worse as it trains), so a stop at --stop-return keeps the weights that
        reached it here."""
        weights = {k: torch.tensor(np.asarray(v)) for k, v in self.fleet.evaluated_weights().items()}
        counters = {k: result[k] for k in ("env_frames", "agent_steps", "learner_steps", "policy_version")}
        save_checkpoint(
            self.run_dir / BEST_NAME,
            {"online": weights},
            {**counters, "eval": result},
            self.signature,
            self.cfg.to_dict(),
        )

    def log_metrics(self, rates: dict) -> None:
        c, rp = self.counters, self.replay
        inserted = rp.get("transitions_inserted", 0)
        row = {
            "wall_s": round(self.wall_s(), 2),
            "env_frames": c.env_frames,
            "agent_steps": c.agent_steps,
            "learner_steps": self.learner.learner_steps,
            "policy_version": c.policy_version,
            "episodes": c.episodes,
            "mean_return_100": c.mean_return_100(),
            "mean_return_greedy_20": c.mean_return_greedy_20(),
            "replay_size": rp.get("size", 0),
            "replay_sampleable": rp.get("items_sampleable", 0),
            "replay_rejected": rp.get("rejected", 0),
            "loss": self.last_loss,
            "mean_q": self.last_mean_q,
            "actors_alive": self.actors_alive,
            "eval_return": c.eval_return(),
            **rates,
            "replay_ratio": rp.get("transitions_sampled", 0) / inserted if inserted else 0.0,
            "policy_lag": c.policy_version
            - min((a["policy_version"] for a in self.actor_stats.values()), default=c.policy_version),
            "weight_sync_age_s": time.monotonic() - self.last_publish,
            "feed_stalled_s": self.fleet.feed_stalled_s,
        }
        self.run_log.metrics(row, "training" if self.learner.learner_steps else "warm-up")

    def summary(self) -> dict:
        c, f = self.counters, self.fleet
        return {
            "env": self.cfg.env.env_id,
            "env_frames": c.env_frames,
            "agent_steps": c.agent_steps,
            "learner_steps": self.learner.learner_steps,
            "episodes": c.episodes,
            "mean_return_100": c.mean_return_100(),
            "mean_return_greedy_20": c.mean_return_greedy_20(),
            "policy_version": c.policy_version,
            "wall_s": round(self.wall_s(), 2),
            "stop_reason": self.stop_reason,
            "replay": self.replay,
            "actors": self.actor_stats,
            "actor_restarts": f.actor_restarts,
            "replay_restarts": f.replay_restarts,
            "replay_records_lost_at_restarts": f.replay_records_lost,
            "evals": c.evals,
            "eval_return": c.eval_return(),
            "best_eval_return": c.best_eval_return,
            "last_eval": c.last_eval,
        }


class _Rates:
    """Frames, steps and updates per second since the last metrics row."""

    def __init__(self, counters: Counters, learner, now: float):
        self.counters, self.learner = counters, learner
        self._mark(now)

    def _mark(self, now: float) -> None:
        c = self.counters
        self.since, self.last = now, (c.env_frames, c.agent_steps, self.learner.learner_steps)

    def take(self, now: float) -> dict:
        c, (f0, s0, u0) = self.counters, self.last
        dt = max(now - self.since, 1e-9)
        rates = {
            "env_frames_per_s": (c.env_frames - f0) / dt,
            "agent_steps_per_s": (c.agent_steps - s0) / dt,
            "updates_per_s": (self.learner.learner_steps - u0) / dt,
        }
        self._mark(now)
        return rates
