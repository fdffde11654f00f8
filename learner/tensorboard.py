"""TensorBoard event files for a run: ``TensorBoardLogger(run_dir)`` writes ``run_dir/tb/``.

Every scalar is logged against one step axis, env frames (emulator frames), so runs with
different numbers of actors, envs or frame skips line up. Tags are namespaced as in
CleanRL: ``charts/`` (scores, episodes), ``losses/``, ``throughput/``, ``replay/``,
``progress/`` (counters), each column's given in ``learner.metrics``. :func:`tags_from_metrics`
maps a row of the trainer's ``metrics.csv`` to tags; :func:`tags_from_episode` one finished
game (the columns of ``episodes.csv``).

The writer is tensorboardX: it needs only numpy, protobuf and packaging (all already here
through Ray), while ``torch.utils.tensorboard`` needs the ``tensorboard`` package, which
pulls in grpcio, absl-py, markdown, werkzeug and the TensorBoard server. If tensorboardX
is missing, ``torch.utils.tensorboard`` is used where ``tensorboard`` is installed;
with neither, logging is off and one warning says so. View with
``tensorboard --logdir runs/`` (the viewer is a separate install).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from learner import metrics

TB_DIR = "tb"

#: metrics.csv column -> tag (``learner.metrics.METRICS``). Columns not listed (and not
#: env_frames, the step) become ``metrics/<column>``, so a column added to the trainer still shows up.
METRIC_TAGS = metrics.tags(metrics.METRICS)
STEP_FIELD = "env_frames"

#: episodes.csv column -> tag (wall_s and env_frames are the time and the step).
EPISODE_TAGS = metrics.tags(metrics.EPISODE_COLUMNS)


def _number(value) -> float | None:
    """A finite float, or None for what cannot be charted (None, '', NaN, inf, text)."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def tags_from_metrics(row: dict) -> dict[str, float]:
    """A metrics.csv row (values as numbers, strings or None) -> {tag: value}.

    The step column (env_frames) is left out; values that are empty, None or NaN (the
    score before any game ended, the loss before the first update) are left out too.
    """
    out = {}
    for key, value in row.items():
        if key == STEP_FIELD:
            continue
        x = _number(value)
        if x is not None:
            out[METRIC_TAGS.get(key, f"metrics/{key}")] = x
    return out


def tags_from_episode(episode: dict) -> dict[str, float]:
    """One finished game (score, agent_steps, epsilon; other keys ignored) -> {tag: value}."""
    return {tag: x for key, tag in EPISODE_TAGS.items() if (x := _number(episode.get(key))) is not None}


def _summary_writer_class():
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        return SummaryWriter
    except ImportError:
        return None


class TensorBoardLogger:
    """Scalars against env frames in ``run_dir/tb/``; a no-op if no writer is installed.

    ``enabled`` says which. ``flush_secs``: the longest a logged value waits in memory
    before TensorBoard can see it.
    """

    def __init__(self, run_dir: str | Path, flush_secs: int = 10):
        self.log_dir = Path(run_dir) / TB_DIR
        writer_class = _summary_writer_class()
        self._writer = None
        if writer_class is None:
            warnings.warn(
                "TensorBoard logging is off: install tensorboardX (pip install tensorboardX)",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = writer_class(str(self.log_dir), flush_secs=flush_secs)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def log(self, step_env_frames: int, scalars: dict[str, float]) -> None:
        """Each ``tag: value`` at step ``step_env_frames``; None and non-finite values are skipped."""
        if self._writer is None:
            return
        step = int(step_env_frames)
        if step < 0:
            raise ValueError(f"step_env_frames must be >= 0, got {step_env_frames}")
        for tag, value in scalars.items():
            x = _number(value)
            if x is not None:
                self._writer.add_scalar(tag, x, step)

    def log_metrics(self, row: dict) -> None:
        """A metrics.csv row, at its own env_frames."""
        self.log(int(row[STEP_FIELD]), tags_from_metrics(row))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
