"""Learning curves: ``python -m learner.plot RUN_DIR [RUN_DIR...] --out curve.png``.

Reads each run's ``metrics.csv`` (one row per log interval, the columns of
``learner/metrics.py``, which also marks the ones drawn here) and, where the run has one,
``episodes.csv`` (one row per finished game: ``wall_s, env_frames, score, agent_steps,
epsilon``), and draws four panels, the runs over each other, labelled by run directory name:

* score against env frames and against wall time: each game's raw score as a faint dot and
  the mean of the last 100 games in bold (from ``episodes.csv``; without it, the
  ``mean_return_100`` column of ``metrics.csv``, empty until a game has ended);
* the TD loss (log scale when it is positive throughout);
* throughput: env frames/s (solid, left axis) and learner updates/s (dashed, right axis).

Rows a live run is still writing (cut short, or with empty or non-numeric fields) are
skipped. Drawn with matplotlib's Agg canvas: no display is needed. Bad input (a run
directory that is missing, has no ``metrics.csv`` or no usable row) is one line on stderr
and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import USAGE_ERROR, OneLineParser
from learner.metrics import EPISODE_COLUMNS, EVAL_COLUMNS, METRICS, plotted, plotted_as

ROLLING_EPISODES = 100
# The columns each file must have in a usable row: the axes (and the score where it is the point).
METRICS_REQUIRED = plotted(METRICS, "x")
EPISODES_REQUIRED = plotted(EPISODE_COLUMNS, "x", "score")
EVALS_REQUIRED = plotted(EVAL_COLUMNS, "x", "score")
# What each panel draws, as learner/metrics.py marks it.
SCORE_100, LOSS = plotted_as(METRICS, "score"), plotted_as(METRICS, "loss")
FRAMES_PER_S, UPDATES_PER_S = plotted_as(METRICS, "frames/s"), plotted_as(METRICS, "updates/s")
EP_SCORE, EVAL_SCORE = plotted_as(EPISODE_COLUMNS, "score"), plotted_as(EVAL_COLUMNS, "score")
EVAL_BAND = plotted(EVAL_COLUMNS, "band")


class PlotError(ValueError):
    """Input we cannot plot; the one-line message names the file and the problem."""


@dataclass
class Run:
    """One run's series, float64 arrays (NaN where a row had no value)."""

    name: str
    metrics: dict[str, np.ndarray]  # the columns of metrics.csv -> float64[rows]
    episodes: dict[str, np.ndarray] | None  # episodes.csv columns -> float64[games], or None
    evals: dict[str, np.ndarray] | None = None  # evals.csv columns -> float64[evaluations], or None


def _float(text: str | None) -> float:
    if text is None or text.strip() == "":
        return math.nan
    return float(text)  # "nan" and "inf" parse too; anything else raises ValueError


def read_csv_columns(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV file as float64 arrays, in file order.

    Rows missing a required value, with a non-numeric field, or cut short (a live run's
    last line being written) are skipped. PlotError if the file cannot be read, lacks a
    required column, or has no usable row.
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise PlotError(
                    f"{path}: no column {', '.join(missing)} in its header {header[:6]}{'...' if len(header) > 6 else ''}"
                )
            columns: dict[str, list[float]] = {c: [] for c in header if c}
            for row in reader:
                if None in row or any(row.get(c) is None for c in columns):  # too many or too few fields
                    continue
                try:
                    values = {c: _float(row[c]) for c in columns}
                except ValueError:
                    continue
                if any(math.isnan(values[c]) for c in required):
                    continue
                for c, v in values.items():
                    columns[c].append(v)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PlotError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    out = {c: np.asarray(v, np.float64) for c, v in columns.items()}
    if not len(out[required[0]]):
        raise PlotError(f"{path}: no complete rows yet")
    return out


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """float64[N]: element i is the mean of x[max(0, i - window + 1) .. i] (fewer at the start)."""
    x = np.asarray(x, np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(i - window, 0)
    return (c[i] - c[lo]) / (i - lo)


def load_run(run_dir: str | Path, name: str | None = None) -> Run:
    d = Path(run_dir)
    if not d.exists():
        raise PlotError(f"{run_dir}: not a directory (nothing there)")
    if not d.is_dir():
        raise PlotError(f"{run_dir}: not a directory (a file)")
    metrics_path = d / "metrics.csv"
    if not metrics_path.is_file():
        raise PlotError(f"{run_dir}: no metrics.csv (not a run directory, or the run has not logged yet)")
    metrics = read_csv_columns(metrics_path, METRICS_REQUIRED)
    episodes_path = d / "episodes.csv"
    episodes = read_csv_columns(episodes_path, EPISODES_REQUIRED) if episodes_path.is_file() else None
    evals_path = d / "evals.csv"
    evals = read_csv_columns(evals_path, EVALS_REQUIRED) if evals_path.is_file() else None
    return Run(name or d.resolve().name, metrics, episodes, evals)


def run_labels(run_dirs: list[str]) -> list[str]:
    """Run directory names; where two runs share a name, their parent is added."""
    paths = [Path(p).resolve() for p in run_dirs]
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _time_unit(max_seconds: float) -> tuple[float, str]:
    if max_seconds >= 2 * 3600:
        return 3600.0, "h"
    if max_seconds >= 2 * 60:
        return 60.0, "min"
    return 1.0, "s"


def plot_runs(runs: list[Run], out: str | Path, size_px: tuple[int, int] = (1600, 1000), dpi: int = 100) -> None:
    """Draw the four panels for ``runs`` and save to ``out`` (format from its suffix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_frames, ax_wall, ax_loss, ax_rate = fig.subplots(2, 2).ravel()
    max_wall = max(float(np.nanmax(r.metrics["wall_s"])) for r in runs)
    if any(r.episodes is not None for r in runs):
        max_wall = max(max_wall, max(float(np.nanmax(r.episodes["wall_s"])) for r in runs if r.episodes is not None))
    scale, unit = _time_unit(max_wall)
    ax_rate2 = ax_rate.twinx()
    colors = [f"C{k % 10}" for k in range(len(runs))]
    for run, color in zip(runs, colors):
        m = run.metrics
        _draw_scores(ax_frames, ax_wall, run, color, scale)
        if LOSS in m:
            ok = np.isfinite(m[LOSS])
            ax_loss.plot(m["env_frames"][ok], m[LOSS][ok], color=color, lw=1.2, label=run.name)
        if FRAMES_PER_S in m:
            ax_rate.plot(m["env_frames"], m[FRAMES_PER_S], color=color, lw=1.5, label=f"{run.name} env frames/s")
        if UPDATES_PER_S in m:
            ax_rate2.plot(
                m["env_frames"], m[UPDATES_PER_S], color=color, lw=1.2, ls="--", label=f"{run.name} updates/s"
            )
    losses = np.concatenate(
        [r.metrics[LOSS][np.isfinite(r.metrics[LOSS])] for r in runs if LOSS in r.metrics] or [np.zeros(0)]
    )
    if len(losses) and (losses > 0).all():
        ax_loss.set_yscale("log")
    frames_fmt = EngFormatter(sep="")
    for ax in (ax_frames, ax_loss, ax_rate):
        ax.set_xlabel("env frames")
        ax.xaxis.set_major_formatter(frames_fmt)
    ax_wall.set_xlabel(f"wall time ({unit})")
    ax_frames.set_ylabel(f"raw score (bold: mean of last {ROLLING_EPISODES} games; markers: evaluation)")
    ax_wall.set_ylabel("raw score")
    ax_loss.set_ylabel("TD loss (Huber)")
    ax_rate.set_ylabel("env frames/s (solid)")
    ax_rate2.set_ylabel("updates/s (dashed)")
    ax_rate.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax_frames.set_title("score vs env frames")
    ax_wall.set_title("score vs wall time")
    ax_loss.set_title("loss")
    ax_rate.set_title("throughput")
    for ax in (ax_frames, ax_wall, ax_loss, ax_rate):
        ax.grid(alpha=0.3)
    handles = ax_frames.get_legend_handles_labels()[0] or ax_loss.get_legend_handles_labels()[0]
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(runs), 6), frameon=False)
    fig.savefig(out, dpi=dpi)


def _draw_scores(ax_frames, ax_wall, run: Run, color: str, scale: float) -> None:
    """The actors' games (faint) and their rolling mean; the evaluator's scores (markers,
    min-max band) where the run has evals.csv: the policy's real skill."""
    m, ep, ev = run.metrics, run.episodes, run.evals
    if ep is not None:
        mean = rolling_mean(ep[EP_SCORE], ROLLING_EPISODES)
        for ax, x in ((ax_frames, ep["env_frames"]), (ax_wall, ep["wall_s"] / scale)):
            ax.scatter(x, ep[EP_SCORE], s=5, color=color, alpha=0.3, linewidths=0, rasterized=True)
            ax.plot(x, mean, color=color, lw=2.2, label=run.name)
    elif SCORE_100 in m:
        ok = ~np.isnan(m[SCORE_100])
        for ax, x in ((ax_frames, m["env_frames"]), (ax_wall, m["wall_s"] / scale)):
            ax.plot(x[ok], m[SCORE_100][ok], color=color, lw=2.2, label=run.name)
    if ev is not None:
        for ax, x in ((ax_frames, ev["env_frames"]), (ax_wall, ev["wall_s"] / scale)):
            if all(c in ev for c in EVAL_BAND):
                ax.fill_between(x, *(ev[c] for c in EVAL_BAND), color=color, alpha=0.12, linewidth=0)
            ax.plot(
                x,
                ev[EVAL_SCORE],
                color=color,
                lw=1.6,
                marker="o",
                ms=4,
                mec="black",
                mew=0.6,
                label=f"{run.name} evaluation",
            )


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, got {text!r}") from None
    if not (100 <= w <= 10000 and 100 <= h <= 10000):
        raise argparse.ArgumentTypeError(f"width and height must lie in 100..10000 pixels, got {text!r}")
    return w, h


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m learner.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each with a metrics.csv)")
    parser.add_argument("--out", required=True, help="image to write: .png (or .pdf, .svg)")
    parser.add_argument(
        "--size", type=_parse_size, default=(1600, 1000), help="image size in pixels, WIDTHxHEIGHT (at --dpi)"
    )
    parser.add_argument("--dpi", type=int, default=100, help="dots per inch")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # the parser printed its one line (or --help)
        return int(e.code or 0)
    out = Path(args.out)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        print("error: learner.plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return USAGE_ERROR

    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        print(
            f"error: --out {args.out}: unsupported image format {out.suffix or '(no suffix)'!r}; use .png, .pdf or .svg",
            file=sys.stderr,
        )
        return USAGE_ERROR
    if not out.parent.is_dir():
        print(f"error: --out {args.out}: directory {str(out.parent)!r} does not exist", file=sys.stderr)
        return USAGE_ERROR
    if out.is_dir():
        print(f"error: --out {args.out}: is a directory; name the image file to write", file=sys.stderr)
        return USAGE_ERROR
    if not 10 <= args.dpi <= 1000:
        print(f"error: --dpi={args.dpi}: must lie in 10..1000", file=sys.stderr)
        return USAGE_ERROR
    try:
        runs = [load_run(d, name) for d, name in zip(args.run_dirs, run_labels(args.run_dirs))]
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    plot_runs(runs, out, args.size, args.dpi)
    print(f"wrote {out} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
