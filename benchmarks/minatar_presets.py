"""MinAtar learning per preset (apex, rainbow, iqn; btr on request): a program, not a test.

    python -m benchmarks.minatar_presets --frames 500000 --out-dir runs/minatar-presets
    python -m benchmarks.minatar_presets --games Seaquest --presets rainbow   # one pair, later

Trains each (game, preset) pair for the same budget of env frames through the real entry
point (``python -m learner.main --env MinAtar/<Game>-v1 --preset <p> --full-action-space
on``; sticky actions, replay ratio (the rate limiter), eval eps and everything else as the
preset resolves them for MinAtar; one seed; the evaluator every budget/--evals frames with
--eval-episodes games). After the run, the final checkpoint is judged by
``learner.evaluate`` with the same number of games, so the table holds a score at the
budget itself (the evaluator's last point comes before it: the run stops at the budget).

A budget in frames does not depend on the machine's load, so the program can be run a
game, or a pair, at a time: each finished pair appends one JSON line to
``<out-dir>/results.jsonl`` (game, preset, budget, wall time, the evaluator's curve
``[env_frames, wall_s, mean, min, max]``, the final evaluation, the actors' 100-game mean,
the settings the preset resolved, the machine and the load averages seen), and a pair
already there at this budget is skipped (``--only-missing on``, the default). A pair that
fails or runs past ``--timeout`` is reported and not written, so the next invocation runs
it again. After each pair and at the end it redraws ``<out-dir>/<Game>.png`` (the
evaluator's score against env frames and against wall time, one line per preset) and
``<out-dir>/<Game>-runs.png`` (``learner.plot``'s panels of the game's runs), and prints
the table at the budget beside Revisiting Rainbow's published MinAtar figures, which are
a different protocol (10M frames, training returns) and so only a reference. The issue's
target: rainbow at least apex's score on 4 of the 5 games. ``btr`` on MinAtar runs the
MinAtar network with btr's head and settings (its IMPALA torso needs Atari frames).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.cli import POSITIVE_INT, SEED, check_env, check_learner_flags, check_out_dir, parser
from benchmarks.machine import describe_machine, loadavg, machine
from benchmarks.report import final_json, table
from benchmarks.system_run import ROOT, SystemRun

GAMES = ["Breakout", "Asterix", "Freeway", "Seaquest", "SpaceInvaders"]
DEFAULT_PRESETS = ["apex", "rainbow", "iqn"]
RESULTS = "results.jsonl"

#: Obando-Ceron & Castro 2021 ("Revisiting Rainbow"), MinAtar at 10M frames: the final
#: training returns of their figures (sticky actions 0.1), read off by eye. A reference only:
#: ten times our budget, and training returns rather than a separate evaluation.
REFERENCE_AGENTS = ("DQN", "C51", "Rainbow", "QR-Rainbow", "IQN-Rainbow", "M-Rainbow")
REVISITING_RAINBOW = {
    "Asterix": (28, 37, 42, 55, 50, 50),
    "Breakout": (7.5, 7, 11, 13.5, 11.5, 14.5),
    "Freeway": (60, 56, 57.5, 50, 49.5, 56.5),
    "Seaquest": (5.5, 5, 10, 17, 6.5, 17),
    "SpaceInvaders": (34, 51, 92, 86, 78, 81),
}
#: The settings of each run kept in its result line ({section: fields} of its config.json).
KEPT_SETTINGS = {
    "env": ("repeat_action_probability", "full_action_space", "envs_per_actor"),
    "actors": ("num_actors", "epsilon_schedule", "epsilon_final"),
    "replay": ("replay_ratio", "n_step", "prioritized", "learning_starts", "replay_capacity"),
    "learner": ("head", "noisy", "munchausen", "dueling", "double_q", "batch_size", "lr", "target_update_period"),
    "eval": ("eval_epsilon", "eval_period", "eval_episodes"),
}


# ---- the results file: one line per finished pair ----------------------------------------
def load_results(path: Path) -> list[dict]:
    """The lines of ``results.jsonl`` (none if it does not exist); a line that does not parse
    (a write cut short) is skipped with a note, so the pair runs again."""
    if not path.exists():
        return []
    lines = []
    for k, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            pair_key(line)
        except (ValueError, KeyError, TypeError):
            print(f"note: {path} line {k} is not a result line; ignored", file=sys.stderr)
            continue
        lines.append(line)
    return lines


def append_result(path: Path, line: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def pair_key(line: dict) -> tuple[str, str, int]:
    return str(line["game"]), str(line["preset"]), int(line["frames"])


def pending_pairs(games, presets, frames: int, results: list[dict], only_missing: bool = True) -> list[tuple]:
    """The (game, preset) pairs to train, game by game: all of them, or (``only_missing``)
    those without a result line at this budget."""
    done = {pair_key(r) for r in results}
    return [(g, p) for g in games for p in presets if not (only_missing and (g, p, frames) in done)]


def latest(results: list[dict], frames: int) -> dict[tuple[str, str], dict]:
    """The newest result line of each (game, preset) at this budget."""
    return {(r["game"], r["preset"]): r for r in results if int(r["frames"]) == frames}


# ---- one pair through the real entry point ------------------------------------------------
def pair_flags(args, game: str, preset: str) -> list:
    """learner.main's flags for one pair (without --run-dir); all else as the preset resolves it."""
    flags = {
        "--env": f"MinAtar/{game}-v1",
        "--preset": preset,
        "--full-action-space": "on",
        "--total-env-frames": args.frames,
        "--eval-period": max(args.frames // args.evals, 1),
        "--eval-episodes": args.eval_episodes,
        "--num-actors": args.num_actors,
        "--envs-per-actor": args.envs_per_actor,
        "--seed": args.seed,
        "--snapshot-interval": -1,
        "--log-interval": 10,
    }
    return [str(x) for kv in flags.items() for x in kv]


class LoadSeen:
    """Samples the 1-minute load average at most every ``every`` s (a ``SystemRun.watch`` predicate)."""

    def __init__(self, every: float = 30.0):
        self.every, self.last, self.values = every, -1e9, []

    def __call__(self, run) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.values.append(round(os.getloadavg()[0], 2))
        return False

    def summary(self) -> dict:
        v = self.values or [float("nan")]
        return {"mean_1min": round(sum(v) / len(v), 2), "max_1min": max(v), "samples": len(self.values)}


def read_curve(run_dir: Path) -> list[list[float]]:
    """The evaluator's points ``[env_frames, wall_s, mean, min, max]`` from the run's evals.csv."""
    from learner.plot import EVALS_REQUIRED, PlotError, read_csv_columns

    try:
        ev = read_csv_columns(run_dir / "evals.csv", EVALS_REQUIRED)
    except PlotError:
        return []
    cols = [ev.get(c) for c in ("env_frames", "wall_s", "mean", "min", "max")]
    return [[round(float(c[i]), 3) if c is not None else None for c in cols] for i in range(len(cols[0]))]


def final_eval(run_dir: Path, episodes: int, seed: int, timeout: float = 1800.0) -> dict | None:
    """``learner.evaluate`` on the run's last checkpoint: {mean, min, max, episodes, env_frames}, or None."""
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.exists():
        return None
    cmd = [sys.executable, "-m", "learner.evaluate", "--checkpoint", str(ckpt), "--episodes", str(episodes)]
    try:
        done = subprocess.run(
            cmd + ["--seed", str(seed), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        print(f"  final evaluation: over {timeout:.0f} s, given up", flush=True)
        return None
    except (ValueError, IndexError):
        print(f"  final evaluation failed (exit {done.returncode}): {done.stderr.strip()[-300:]}", flush=True)
        return None
    keys = ("mean", "min", "max")
    return {**{k: r.get(k) for k in keys}, "episodes": len(r.get("scores", [])), **r.get("checkpoint", {})}


def kept_settings(run_dir: Path) -> dict:
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {f"{s}.{k}": cfg.get(s, {}).get(k) for s, keys in KEPT_SETTINGS.items() for k in keys}


def run_pair(args, game: str, preset: str, out: Path, m: dict) -> dict | None:
    """Train one pair; its result line, or None (said why) if it did not reach the budget."""
    run_dir = out / "runs" / f"{game}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    load_before, seen = loadavg(), LoadSeen()
    t0 = time.monotonic()
    run = SystemRun(pair_flags(args, game, preset), run_dir, pss=False).start()
    print(f"{game} / {preset}: {run.command}", flush=True)
    run.watch(seen, args.timeout, interval=2.0)
    code = run.stop()
    wall = time.monotonic() - t0
    summary = run.summary()
    if code != 0 or summary.get("stop_reason") != "total_env_frames":
        why = f"exit {code}, stop reason {summary.get('stop_reason') or 'none'}, {wall:.0f} s"
        print(f"{game} / {preset}: did not reach the budget ({why}); not recorded. Log: {run.log.name}", flush=True)
        print(run.log_tail(8), flush=True)
        return None
    curve = read_curve(run_dir)
    final = final_eval(run_dir, args.eval_episodes, args.seed)
    return {
        "game": game,
        "preset": preset,
        "frames": args.frames,
        "env_frames": int(summary.get("env_frames") or 0),
        "learner_steps": summary.get("learner_steps"),
        "wall_s": round(float(summary.get("wall_s") or wall), 1),  # the run's own clock, as the curve's
        "process_wall_s": round(wall, 1),  # with Ray's start and shutdown
        "curve": curve,
        "final_eval": final,
        "final_eval_mean": final["mean"] if final else (curve[-1][2] if curve else None),
        "final_eval_source": "learner.evaluate on the final checkpoint" if final else "the evaluator's last point",
        "train_mean_100": summary.get("mean_return_100"),
        "settings": kept_settings(run_dir),
        "machine": m,
        "machine_text": describe_machine(m),
        "load_before": load_before,
        "load_after": loadavg(),
        "load_seen": seen.summary(),
        "run_dir": str(run_dir),
        "command": run.command,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ---- the report: tables and figures from result lines alone -------------------------------
def rainbow_vs_apex(best: dict, games: list[str]) -> tuple[int, int, dict[str, str]]:
    """(games where rainbow >= apex, games with both, {game: "yes"/"no"/"-"})."""
    verdicts = {}
    for g in games:
        a, r = best.get((g, "apex")), best.get((g, "rainbow"))
        if a is None or r is None or a.get("final_eval_mean") is None or r.get("final_eval_mean") is None:
            verdicts[g] = "-"
        else:
            verdicts[g] = "yes" if r["final_eval_mean"] >= a["final_eval_mean"] else "no"
    return sum(v == "yes" for v in verdicts.values()), sum(v != "-" for v in verdicts.values()), verdicts


def score_table(best: dict, games: list[str], presets: list[str], frames: int) -> str:
    """Game x preset: the score at the budget and the wall time, and rainbow >= apex."""
    wins, compared, verdicts = rainbow_vs_apex(best, games)
    rows = []
    for g in games:
        row = [g]
        for p in presets:
            r = best.get((g, p))
            row += [r.get("final_eval_mean") if r else None, f"{r['wall_s'] / 60:.0f} min" if r else None]
            row += [r.get("train_mean_100") if r else None]
        rows.append(row + [verdicts[g]])
    headers = ["game"] + [h for p in presets for h in (f"{p} eval", f"{p} wall", f"{p} train100")]
    title = (
        f"MinAtar at {frames:,} env frames, one seed (eval: the final checkpoint's games; train100: the actors' "
        f"last 100 games). rainbow >= apex on {wins} of {compared} games (target: 4 of 5)"
    )
    return table(headers + ["rainbow>=apex"], rows, title=title)


def reference_table(games: list[str]) -> str:
    rows = [[g, *REVISITING_RAINBOW[g]] for g in games if g in REVISITING_RAINBOW]
    title = (
        "Reference only, a different budget: Revisiting Rainbow (Obando-Ceron & Castro 2021), MinAtar at 10M "
        "frames, training returns, sticky actions 0.1"
    )
    return table(["game", *REFERENCE_AGENTS], rows, title=title)


def draw_game(game: str, lines: list[dict], out_png: Path, colors: dict[str, str]) -> None:
    """The evaluator's score against env frames (left) and wall time (right), one line per
    preset (band: min to max of the games), the final evaluation as a star."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from learner.plot import _time_unit  # the scale learner.plot's figures use

    fig = Figure(figsize=(14, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_f, ax_w = fig.subplots(1, 2)
    scale, unit = _time_unit(max([r["wall_s"] for r in lines] or [1.0]))
    for r in lines:
        pts = [p for p in r.get("curve") or [] if p[2] is not None]
        fin = r.get("final_eval")
        c = colors.get(r["preset"], "k")
        for ax, xi, div in ((ax_f, 0, 1.0), (ax_w, 1, scale)):
            x = [p[xi] / div for p in pts]
            if pts and all(p[3] is not None and p[4] is not None for p in pts):
                ax.fill_between(x, [p[3] for p in pts], [p[4] for p in pts], color=c, alpha=0.12, lw=0)
            ax.plot(x, [p[2] for p in pts], color=c, marker="o", ms=4, lw=1.6, label=r["preset"])
            if fin and fin.get("mean") is not None:
                fx = (fin.get("env_frames") or r["env_frames"]) if xi == 0 else r["wall_s"] / div
                ax.plot([fx], [fin["mean"]], color=c, marker="*", ms=12, mec="black", mew=0.6)
    ax_f.set_xlabel("env frames")
    ax_f.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax_w.set_xlabel(f"wall time ({unit})")
    for ax, what in ((ax_f, "env frames"), (ax_w, "wall time")):
        ax.set_xlim(left=0)
        ax.set_ylabel("evaluator's mean score (star: final checkpoint)")
        ax.set_title(f"MinAtar {game}: score vs {what}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.savefig(out_png)


def draw_runs(game: str, lines: list[dict], out_png: Path) -> None:
    """learner.plot's four panels (scores, loss, throughput) of the game's runs still on disk."""
    from learner.plot import PlotError, load_run, plot_runs

    runs = []
    for r in lines:
        try:
            runs.append(load_run(r["run_dir"], name=r["preset"]))
        except (PlotError, KeyError):
            continue
    if runs:
        plot_runs(runs, out_png)


def draw_all(results: list[dict], frames: int, out: Path, games: list[str] | None = None) -> list[Path]:
    """Redraw the figures of ``games`` (default: every game with a result at this budget)."""
    from common.config import PRESETS

    colors = {p: f"C{k % 10}" for k, p in enumerate(PRESETS)}
    best = latest(results, frames)
    drawn = []
    for g in games or sorted({g for g, _ in best}):
        lines = [best[k] for k in sorted(best) if k[0] == g]
        if lines:
            draw_game(g, lines, out / f"{g}.png", colors)
            draw_runs(g, lines, out / f"{g}-runs.png")
            drawn.append(out / f"{g}.png")
    return drawn


def report(results: list[dict], games: list[str], presets: list[str], frames: int) -> str:
    """Both tables for the games and presets asked for and any others already in the results."""
    best = latest(results, frames)
    games = [g for g in GAMES if g in games or any(k[0] == g for k in best)]
    presets = presets + sorted({p for _, p in best} - set(presets))
    return score_table(best, games, presets, frames) + "\n\n" + reference_table(games)


# ---- the command --------------------------------------------------------------------------
def name_list(choices: list[str], what: str):
    """An argparse ``type``: a comma-separated list of names from ``choices``."""
    import argparse

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad or text!r}; choose from {','.join(choices)}")
        return list(dict.fromkeys(names))

    parse.__name__ = what
    return parse


def parse_args(argv):
    from common.config import PRESETS

    p = parser(__doc__.splitlines()[0], prog="python -m benchmarks.minatar_presets")
    p.add_argument("--frames", type=POSITIVE_INT, default=500_000, help="env frames per pair (the budget)")
    p.add_argument("--games", type=name_list(GAMES, "game"), default=",".join(GAMES), help="comma-separated")
    p.add_argument(
        "--presets", type=name_list(list(PRESETS), "preset"), default=",".join(DEFAULT_PRESETS), help="comma-separated"
    )
    p.add_argument("--only-missing", choices=("on", "off"), default="on", help="skip pairs already in results.jsonl")
    p.add_argument("--evals", type=POSITIVE_INT, default=10, help="evaluations over the budget")
    p.add_argument("--eval-episodes", type=POSITIVE_INT, default=20, help="games per evaluation")
    p.add_argument("--num-actors", type=POSITIVE_INT, default=2)
    p.add_argument("--envs-per-actor", type=POSITIVE_INT, default=4)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--timeout", type=POSITIVE_INT, default=4 * 3600, help="seconds per pair at most")
    p.add_argument("--out-dir", default="runs/minatar-presets")
    args = p.parse_args(argv)
    check_out_dir(p, "--out-dir", args.out_dir)
    for g in args.games:
        check_env(p, "--games", f"MinAtar/{g}-v1")
    for preset in args.presets:
        check_learner_flags(p, pair_flags(args, args.games[0], preset))
    try:  # made now, and results.jsonl opened once: a pair never ends unable to write its line
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        open(Path(args.out_dir) / RESULTS, "a").close()
    except OSError as e:
        p.error(f"--out-dir {args.out_dir}: cannot write there ({e.strerror})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir)
    results = load_results(out / RESULTS)
    todo = pending_pairs(args.games, args.presets, args.frames, results, args.only_missing == "on")
    m = machine()
    print(describe_machine(m), flush=True)
    print(f"{len(todo)} pair(s) to train at {args.frames:,} frames; results in {out / RESULTS}", flush=True)
    failed = []
    for game, preset in todo:
        line = run_pair(args, game, preset, out, machine())
        if line is None:
            failed.append(f"{game}/{preset}")
            continue
        append_result(out / RESULTS, line)
        results.append(line)
        print(f"{game} / {preset}: eval {line['final_eval_mean']}, {line['wall_s']:.0f} s", flush=True)
        draw_all(results, args.frames, out, [game])
    drawn = draw_all(results, args.frames, out)
    print(report(results, args.games, args.presets, args.frames))
    print(f"figures: {', '.join(str(d) for d in drawn) or 'none yet'}" + (f"; failed: {failed}" if failed else ""))
    best = latest(results, args.frames)
    wins, compared, _ = rainbow_vs_apex(best, GAMES)
    final_json({"frames": args.frames, "rainbow_ge_apex": [wins, compared], "failed": failed, "machine": m})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
