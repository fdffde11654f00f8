"""Everything a run writes about itself, and the schemas of what it writes. No Ray here.

``metrics.csv`` (one row of :data:`METRIC_FIELDS` per log interval), ``episodes.csv``
(one row of :data:`EPISODE_FIELDS` per finished game), ``evals.csv``, TensorBoard event
files, the progress line and ``summary.json``. The trainer hands over plain rows; gauges
for Ray's metrics come in as any object with ``update(row)``, so this module can be used
(and tested) without a cluster. The columns, their meanings and their TensorBoard tags
are the tables of ``learner.metrics``; the lists here are read from them, for the
writers and the tests that name them.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from learner import metrics
from learner.tensorboard import TensorBoardLogger, tags_from_episode

#: The columns of metrics.csv, episodes.csv and evals.csv, read from ``learner.metrics``.
METRIC_FIELDS = metrics.names(metrics.METRICS)
EPISODE_FIELDS = metrics.names(metrics.EPISODE_COLUMNS)
EVAL_FIELDS = metrics.names(metrics.EVAL_COLUMNS)
#: evals.csv column -> TensorBoard tag (against env frames, like every other tag).
EVAL_TAGS = metrics.tags(metrics.EVAL_COLUMNS)
SUMMARY_FIELDS = [
    "env",
    "env_frames",
    "agent_steps",
    "learner_steps",
    "episodes",
    "mean_return_100",
    "mean_return_greedy_20",
    "policy_version",
    "wall_s",
    "stop_reason",
    "replay",
    "actors",
    "actor_restarts",
    "replay_restarts",
    "replay_records_lost_at_restarts",
    "evals",
    "eval_return",
    "best_eval_return",
    "last_eval",
]


def _append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerows(rows)


def progress_line(row: dict, phase: str) -> str:
    """The one line a person watching the run reads, from a metrics row. The headline score
    is the evaluator's (fresh games at a small ε) once there is one; the actors' 100-game
    mean mixes exploration levels."""
    score, ev = row.get("mean_return_100"), row.get("eval_return")
    scores = f"eval {ev:.1f} | " if ev is not None else ""
    scores += f"score100 {'-' if score is None else f'{score:.1f}'}"
    stalled = row.get("feed_stalled_s") or 0.0
    stall = f" | FEED STALLED {stalled:.0f}s (not the rate limiter)" if stalled > 0 else ""
    return (
        f"[{row['wall_s']:7.0f}s] {phase:8s} frames {row['env_frames']:,} ({row['env_frames_per_s']:,.0f}/s) | "
        f"updates {row['learner_steps']:,} ({row['updates_per_s']:.1f}/s) | "
        f"replay {row['replay_size']:,} | episodes {row['episodes']:,} | {scores} | loss {row['loss']:.4f}{stall}"
    )


class RunLog:
    """Writes a run's outputs into ``run_dir``. ``gauges``: optional ``update(row)`` sink
    (the Ray metrics of the driver); ``stream``: where progress lines go."""

    def __init__(self, run_dir: str | Path, gauges=None, stream=None, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.gauges = gauges
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tb = TensorBoardLogger(self.run_dir) if tensorboard else None
        self._line_open = False

    def episodes(self, episodes: list[dict], wall_s: float, env_frames: int) -> None:
        """episodes.csv and TensorBoard: one row per finished game (raw score)."""
        if not episodes:
            return
        rows = [
            {
                "wall_s": round(wall_s, 2),
                "env_frames": env_frames,
                "score": ep["score"],
                "agent_steps": ep["agent_steps"],
                "epsilon": round(ep["epsilon"], 5),
                "stream_id": ep["stream_id"],
            }
            for ep in episodes
        ]
        if self.tb is not None:
            for ep in episodes:
                self.tb.log(env_frames, tags_from_episode(ep))
        _append_rows(self.run_dir / "episodes.csv", EPISODE_FIELDS, rows)

    def metrics(self, row: dict, phase: str) -> None:
        """metrics.csv, TensorBoard, the gauges and the progress line for one interval."""
        unknown = set(row) - set(METRIC_FIELDS)
        if unknown:
            raise ValueError(f"metrics row has fields outside METRIC_FIELDS: {sorted(unknown)}")
        if self.gauges is not None:
            self.gauges.update(row)
        if self.tb is not None:
            self.tb.log_metrics(row)
        _append_rows(self.run_dir / "metrics.csv", METRIC_FIELDS, [row])
        line = progress_line(row, phase)
        # On a terminal the line is redrawn in place; in a log each interval is a line.
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()
        self._line_open = self.tty

    def evaluation(self, row: dict) -> None:
        """evals.csv, TensorBoard (``eval/...``) and the gauges for one finished evaluation."""
        row = {k: row.get(k) for k in EVAL_FIELDS}
        if self.tb is not None:
            self.tb.log(int(row["env_frames"]), {tag: row[k] for k, tag in EVAL_TAGS.items() if row.get(k) is not None})
        if self.gauges is not None:
            self.gauges.update({"eval_return": row["mean"]})
        _append_rows(self.run_dir / "evals.csv", EVAL_FIELDS, [row])

    def message(self, text: str) -> None:
        """A line of its own (ends a progress line drawn in place first)."""
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False

    def summary(self, summary: dict) -> dict:
        """summary.json: what the run did, written at its end."""
        missing = [k for k in SUMMARY_FIELDS if k not in summary]
        if missing:
            raise ValueError(f"summary lacks {missing}")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def close(self) -> None:
        self.end_line()
        if self.tb is not None:
            self.tb.close()
