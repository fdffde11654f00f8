"""The one table of what a run measures: each figure's name, meaning and where it goes.

A run writes three tables of figures: ``metrics.csv`` (one row of :data:`METRICS` per log
interval, built by ``learner.trainer``), ``episodes.csv`` (one row of
:data:`EPISODE_COLUMNS` per game an actor finished) and ``evals.csv`` (one row of
:data:`EVAL_COLUMNS` per evaluation). Each row of these tables says, once, what the figure
means and where it goes besides its CSV column: its TensorBoard tag, whether the driver
exports it as a Ray gauge, and which part of ``learner.plot`` draws it. ``run_log``,
``tensorboard``, ``ray_metrics`` and ``plot`` read these tables; none lists the names
again. To add a figure, add one line here (in the column order you want in the CSV) and
have the trainer put a value for it into its row. Plain data, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The prefix of the driver's Ray gauges (Ray adds its own ``ray_`` on export).
GAUGE_PREFIX = "raydqn_"


@dataclass(frozen=True)
class Metric:
    """One CSV column. ``tag``: its TensorBoard tag (None: not logged, or the step axis);
    ``gauge``: the driver exports it as the Ray gauge ``raydqn_<name>``, described by
    ``meaning``; ``plot``: the part of ``learner.plot`` that draws it (None: not drawn;
    ``"x"``: an axis, required in every row)."""

    name: str
    meaning: str
    tag: str | None = None
    gauge: bool = False
    plot: str | None = None

    @property
    def gauge_name(self) -> str:
        return GAUGE_PREFIX + self.name


M = Metric

#: metrics.csv, in column order. The step of every TensorBoard tag is env_frames.
METRICS: tuple[Metric, ...] = (
    M("wall_s", "seconds the run has trained, earlier sessions of a resumed run included", "progress/wall_s", plot="x"),
    M("env_frames", "emulator frames so far (4 per agent step on Atari)", gauge=True, plot="x"),
    M("agent_steps", "agent steps so far, all actors", "progress/agent_steps"),
    M("learner_steps", "learner updates so far", "progress/learner_steps", gauge=True),
    M("policy_version", "version of the weights last published", "progress/policy_version", gauge=True),
    M("episodes", "games the actors finished so far", "charts/episodes"),
    M("mean_return_100", "mean raw score of the last 100 games", "charts/mean_return_100", gauge=True, plot="score"),
    M("mean_return_greedy_20", "mean raw score of the last 20 games at eps <= 0.05", "charts/mean_return_greedy_20"),
    M(
        "env_frames_per_s",
        "emulator frames per second, all actors",
        "throughput/env_frames_per_s",
        gauge=True,
        plot="frames/s",
    ),
    M("agent_steps_per_s", "agent steps per second, all actors", "throughput/agent_steps_per_s", gauge=True),
    M("updates_per_s", "learner updates per second", "throughput/updates_per_s", gauge=True, plot="updates/s"),
    M("replay_size", "records held in replay, all shards", "replay/size", gauge=True),
    M("replay_sampleable", "items the replay can sample from, all shards", "replay/sampleable"),
    M("replay_rejected", "step batches the replay rejected as malformed, all shards", "replay/rejected"),
    M("loss", "TD loss of the last update", "losses/td_loss", gauge=True, plot="loss"),
    M("mean_q", "mean Q of the last batch", "losses/mean_q", gauge=True),
    M("actors_alive", "actors running", "progress/actors_alive"),
    M("replay_ratio", "transitions sampled per transition inserted so far", "replay/ratio", gauge=True),
    M("policy_lag", "versions the slowest actor is behind the learner", "progress/policy_lag", gauge=True),
    M("weight_sync_age_s", "seconds since weights were last published", "progress/weight_sync_age_s", gauge=True),
    M(
        "eval_return",
        "mean raw score of the newest evaluation (fresh games at --eval-epsilon)",
        "eval/latest_mean_return",
        gauge=True,
    ),
    M(
        "feed_stalled_s",
        "seconds the learner has had no batch while the replay holds items, for a reason other than the rate limiter",
        "progress/feed_stalled_s",
        gauge=True,
    ),
)

#: episodes.csv, in column order: one finished game of an actor (raw score).
EPISODE_COLUMNS: tuple[Metric, ...] = (
    M("wall_s", "the run's wall time when the game was reported", plot="x"),
    M("env_frames", "the run's emulator frames when the game was reported", plot="x"),
    M("score", "the game's raw score, over all its lives", "charts/episodic_return", plot="score"),
    M("agent_steps", "the game's agent steps", "charts/episodic_length"),
    M("epsilon", "the exploration eps of the stream that played it", "charts/episode_epsilon"),
    M("stream_id", "the env stream of its actor that played it"),
)

#: evals.csv, in column order: one evaluation (the evaluator's result with the wall time).
EVAL_COLUMNS: tuple[Metric, ...] = (
    M("wall_s", "the run's wall time when the result came back", plot="x"),
    M("env_frames", "the run's emulator frames when the evaluation was asked for", plot="x"),
    M("agent_steps", "the run's agent steps when the evaluation was asked for"),
    M("learner_steps", "the run's learner updates when the evaluation was asked for"),
    M("policy_version", "version of the weights evaluated"),
    M("episodes", "whole games played"),
    M("epsilon", "the exploration eps they were played at (--eval-epsilon)"),
    M("mean", "mean raw score of the games", "eval/mean_return", plot="score"),
    M("median", "median raw score", "eval/median_return"),
    M("min", "lowest raw score", "eval/min_return", plot="band"),
    M("max", "highest raw score", "eval/max_return", plot="band"),
    M("human_normalized_mean", "the mean as percent of a human's score (Atari-57 only)", "eval/human_normalized_mean"),
    M("eval_s", "seconds the evaluation took", "eval/seconds"),
    M("eval_agent_steps", "agent steps the evaluation played"),
)
del M


def names(table: tuple[Metric, ...]) -> list[str]:
    """The CSV columns of ``table``, in order."""
    return [m.name for m in table]


def tags(table: tuple[Metric, ...]) -> dict[str, str]:
    """Column -> TensorBoard tag, for the columns that have one."""
    return {m.name: m.tag for m in table if m.tag is not None}


def plotted(table: tuple[Metric, ...], *parts: str) -> tuple[str, ...]:
    """The columns ``learner.plot`` draws as any of ``parts``, in column order."""
    return tuple(m.name for m in table if m.plot in parts)


def plotted_as(table: tuple[Metric, ...], part: str) -> str:
    """The one column ``learner.plot`` draws as ``part``; ValueError if not exactly one."""
    found = plotted(table, part)
    if len(found) != 1:
        raise ValueError(f"plot part {part!r}: {len(found)} columns are marked for it ({', '.join(found)}), not one")
    return found[0]
