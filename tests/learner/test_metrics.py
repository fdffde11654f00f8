"""The table of metrics (learner/metrics.py) and what every writer reads from it: the CSV
columns, TensorBoard tags and Ray gauge names users and dashboards already rely on are
written out here literally, so a change to the table that changes an output fails."""

from __future__ import annotations

import pytest

from learner import metrics
from learner.metrics import EPISODE_COLUMNS, EVAL_COLUMNS, METRICS, Metric

METRICS_CSV = (
    "wall_s,env_frames,agent_steps,learner_steps,policy_version,episodes,mean_return_100,mean_return_greedy_20,"
    "env_frames_per_s,agent_steps_per_s,updates_per_s,replay_size,replay_sampleable,replay_rejected,loss,mean_q,"
    "actors_alive,replay_ratio,policy_lag,weight_sync_age_s,eval_return,feed_stalled_s"
)
EVALS_CSV = (
    "wall_s,env_frames,agent_steps,learner_steps,policy_version,episodes,epsilon,mean,median,min,max,"
    "human_normalized_mean,eval_s,eval_agent_steps"
)
EPISODES_CSV = "wall_s,env_frames,score,agent_steps,epsilon,stream_id"
METRIC_TAGS = {
    "wall_s": "progress/wall_s",
    "agent_steps": "progress/agent_steps",
    "learner_steps": "progress/learner_steps",
    "policy_version": "progress/policy_version",
    "episodes": "charts/episodes",
    "mean_return_100": "charts/mean_return_100",
    "mean_return_greedy_20": "charts/mean_return_greedy_20",
    "env_frames_per_s": "throughput/env_frames_per_s",
    "agent_steps_per_s": "throughput/agent_steps_per_s",
    "updates_per_s": "throughput/updates_per_s",
    "replay_size": "replay/size",
    "replay_sampleable": "replay/sampleable",
    "replay_rejected": "replay/rejected",
    "loss": "losses/td_loss",
    "mean_q": "losses/mean_q",
    "actors_alive": "progress/actors_alive",
    "replay_ratio": "replay/ratio",
    "policy_lag": "progress/policy_lag",
    "weight_sync_age_s": "progress/weight_sync_age_s",
    "eval_return": "eval/latest_mean_return",
    "feed_stalled_s": "progress/feed_stalled_s",
}
EVAL_TAGS = {
    "mean": "eval/mean_return",
    "median": "eval/median_return",
    "min": "eval/min_return",
    "max": "eval/max_return",
    "human_normalized_mean": "eval/human_normalized_mean",
    "eval_s": "eval/seconds",
}
EPISODE_TAGS = {
    "score": "charts/episodic_return",
    "agent_steps": "charts/episodic_length",
    "epsilon": "charts/episode_epsilon",
}
GAUGES = {
    "env_frames": "emulator frames so far (4 per agent step on Atari)",
    "agent_steps_per_s": "agent steps per second, all actors",
    "env_frames_per_s": "emulator frames per second, all actors",
    "updates_per_s": "learner updates per second",
    "learner_steps": "learner updates so far",
    "policy_version": "version of the weights last published",
    "replay_size": "records held in replay, all shards",
    "replay_ratio": "transitions sampled per transition inserted so far",
    "mean_return_100": "mean raw score of the last 100 games",
    "eval_return": "mean raw score of the newest evaluation (fresh games at --eval-epsilon)",
    "loss": "TD loss of the last update",
    "mean_q": "mean Q of the last batch",
    "policy_lag": "versions the slowest actor is behind the learner",
    "weight_sync_age_s": "seconds since weights were last published",
    "feed_stalled_s": "seconds the learner has had no batch while the replay holds items, for a reason other than the rate limiter",
}


def test_the_writers_read_the_columns_and_tags_users_already_have():
    from learner import run_log, tensorboard

    assert ",".join(run_log.METRIC_FIELDS) == METRICS_CSV
    assert ",".join(run_log.EVAL_FIELDS) == EVALS_CSV
    assert ",".join(run_log.EPISODE_FIELDS) == EPISODES_CSV
    assert all(isinstance(f, list) for f in (run_log.METRIC_FIELDS, run_log.EVAL_FIELDS, run_log.EPISODE_FIELDS))
    assert tensorboard.METRIC_TAGS == METRIC_TAGS and tensorboard.STEP_FIELD == "env_frames"
    assert run_log.EVAL_TAGS == EVAL_TAGS and tensorboard.EPISODE_TAGS == EPISODE_TAGS


def test_the_driver_gauges_keep_their_names_and_descriptions():
    pytest.importorskip("ray")
    from learner.ray_metrics import DRIVER_GAUGES

    assert DRIVER_GAUGES == {column: (f"raydqn_{column}", desc) for column, desc in GAUGES.items()}


def test_plot_reads_what_it_draws_from_the_table():
    from learner import plot

    assert plot.METRICS_REQUIRED == ("wall_s", "env_frames")
    assert plot.EPISODES_REQUIRED == ("wall_s", "env_frames", "score")
    assert plot.EVALS_REQUIRED == ("wall_s", "env_frames", "mean")
    assert (plot.SCORE_100, plot.LOSS, plot.FRAMES_PER_S, plot.UPDATES_PER_S) == (
        "mean_return_100",
        "loss",
        "env_frames_per_s",
        "updates_per_s",
    )
    assert (plot.EP_SCORE, plot.EVAL_SCORE, plot.EVAL_BAND) == ("score", "mean", ("min", "max"))


@pytest.mark.parametrize("table", [METRICS, EPISODE_COLUMNS, EVAL_COLUMNS], ids=["metrics", "episodes", "evals"])
def test_each_table_names_a_column_once_with_a_meaning_and_namespaced_tags(table):
    names = metrics.names(table)
    assert len(set(names)) == len(names)
    tags = [m.tag for m in table if m.tag is not None]
    assert len(set(tags)) == len(tags) and all("/" in t for t in tags)
    assert all(m.meaning and m.meaning == m.meaning.strip() for m in table)
    assert metrics.plotted(table, "x") == ("wall_s", "env_frames")  # every file has the run's two clocks


def test_a_new_figure_is_one_line_of_the_table():
    row = Metric("feed_stalled_s", "seconds the learner waited for a batch", "throughput/feed_stalled_s", gauge=True)
    table = (*METRICS, row)
    assert metrics.names(table)[-1] == "feed_stalled_s" and metrics.names(table)[:-1] == METRICS_CSV.split(",")
    assert metrics.tags(table)["feed_stalled_s"] == "throughput/feed_stalled_s"
    assert row.gauge_name == "raydqn_feed_stalled_s" and metrics.plotted(table, "x") == ("wall_s", "env_frames")
    with pytest.raises(ValueError):
        metrics.plotted_as((*METRICS, Metric("loss2", "another loss", plot="loss")), "loss")  # one column a part


def test_the_progress_line_says_when_the_feed_stalls_and_stays_quiet_otherwise():
    from learner.run_log import progress_line

    row = {name: 0 for name in metrics.names(METRICS)}
    row.update(loss=0.5, mean_return_100=None, eval_return=None)
    assert "STALLED" not in progress_line(row, "training")
    row["feed_stalled_s"] = 42.0
    assert "FEED STALLED 42s (not the rate limiter)" in progress_line(row, "training")
