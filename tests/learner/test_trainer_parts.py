import dataclasses
import os

from common.config import ActorConfig, Config, LearnerConfig, ReplayConfig, RunConfig
from learner.trainer import Counters, cpu_learner_threads


def test_cpu_learner_threads_leave_the_actors_their_cores():
    cores = os.cpu_count() or 1
    cfg = Config(actors=ActorConfig(num_actors=1), replay=ReplayConfig(replay_shards=1))
    assert cpu_learner_threads(cfg) == max(1, cores - 2)
    many = dataclasses.replace(cfg, actors=ActorConfig(num_actors=cores + 5))
    assert cpu_learner_threads(many) == 1
    asked = dataclasses.replace(cfg, learner=LearnerConfig(learner_threads=3))
    assert cpu_learner_threads(asked) == 3
    cluster = dataclasses.replace(many, run=RunConfig(address="auto"))
    assert cpu_learner_threads(cluster) == cores  # the actors run on other nodes


def stats(actor, steps, episodes=()):
    return {
        "actor": actor,
        "agent_steps": steps,
        "env_frames": 4 * steps,
        "episodes": [{"score": s, "epsilon": e, "agent_steps": 1, "stream_id": 0} for s, e in episodes],
    }


def test_counters_add_deltas_and_survive_an_actor_restart():
    c = Counters({"env_frames": 400, "agent_steps": 100, "episodes": 2})  # resumed run
    c.add_actor_stats(stats(0, 50, [(3.0, 0.4), (7.0, 0.01)]))
    c.add_actor_stats(stats(1, 20))
    c.add_actor_stats(stats(0, 80))
    assert (c.agent_steps, c.env_frames) == (100 + 80 + 20, 400 + 320 + 80)
    c.add_actor_stats(stats(0, 5))  # actor 0 restarted: its count began again at 0
    assert c.agent_steps == 100 + 80 + 20 + 5
    assert c.episodes == 4 and c.mean_return_100() == 5.0
    assert c.mean_return_greedy_20() == 7.0  # only streams with eps <= 0.05
    saved = Counters(c.to_dict(wall_s=12.0))
    assert saved.episodes == 4 and list(saved.recent) == [3.0, 7.0] and saved.wall_s == 12.0


class _Rows:
    """A run log that keeps the metrics rows it is given."""

    def __init__(self):
        self.rows = []

    def metrics(self, row, phase):
        self.rows.append(row)


def test_the_trainer_fills_every_column_of_the_metrics_table(tmp_path):
    # A figure added to learner/metrics.py needs a value here too, and the trainer writes
    # nothing the table does not describe.
    from types import SimpleNamespace

    from learner.metrics import METRICS
    from learner.trainer import Trainer, _Rates

    learner = SimpleNamespace(learner_steps=0)
    log = _Rows()
    counters = Counters()
    fleet = SimpleNamespace(feed_stalled_s=3.0)  # what the trainer reads of a fleet for a row
    trainer = Trainer(Config(), tmp_path, learner, fleet, log, counters, {})
    rates = _Rates(counters, learner, now=0.0)
    counters.env_frames, counters.agent_steps, learner.learner_steps = 400, 100, 5
    trainer.log_metrics(rates.take(now=2.0))
    (row,) = log.rows
    assert list(row) and set(row) == {m.name for m in METRICS}
    assert (row["env_frames_per_s"], row["agent_steps_per_s"], row["updates_per_s"]) == (200.0, 50.0, 2.5)
    assert row["feed_stalled_s"] == 3.0
