"""MinAtar learning curves on this machine beside the MinAtar paper's DQN: a program, not a test.

    python -m benchmarks.minatar_curves --frames 500000 --out-dir runs/minatar

Trains each of the five MinAtar games (Young & Tian 2019) for the same budget of env frames
through the real entry point (actors, replay, learner, evaluator), then prints, per game,
the evaluator's score (fresh games at ``--eval-epsilon``) and the actors' 100-game mean at
the budget, the wall time, and the paper's DQN at the same frame count (read off its
learning curves, ``PAPER_DQN``), and draws every run with ``learner.plot``.

The paper's curves are the 100-episode moving average of training returns (ε-greedy,
ε 1 → 0.1 over the first 100K frames), full action set, sticky actions 0.1, one update of
32 per frame, averaged over 30 seeds; ours run the default (apex) preset with the full
action set and the paper's sticky actions, one seed, on 2 CPU cores.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from benchmarks.cli import POSITIVE_INT, SEED, parser
from benchmarks.machine import describe_machine, loadavg, machine
from benchmarks.report import final_json, table
from benchmarks.system_run import SystemRun

GAMES = ["Breakout", "Asterix", "Freeway", "Seaquest", "SpaceInvaders"]

#: The paper's DQN (with replay), 100-episode moving average of training returns, read off
#: the learning curves of the MinAtar README (img/learning_curves.gif) by eye: {game:
#: {frames: return}}. Accurate to about a tenth of each panel's scale.
PAPER_DQN = {
    "Breakout": {100_000: 4.5, 250_000: 7.0, 500_000: 8.5, 1_000_000: 9.5, 5_000_000: 10.0},
    "Asterix": {100_000: 0.5, 250_000: 0.7, 500_000: 1.0, 1_000_000: 8.0, 5_000_000: 17.0},
    "Freeway": {100_000: 5.5, 250_000: 5.5, 500_000: 35.0, 1_000_000: 49.0, 5_000_000: 50.0},
    "Seaquest": {100_000: 0.4, 250_000: 0.6, 500_000: 0.8, 1_000_000: 1.0, 5_000_000: 20.5},
    "SpaceInvaders": {100_000: 10.0, 250_000: 22.0, 500_000: 27.0, 1_000_000: 32.0, 5_000_000: 44.0},
}


def paper_at(game: str, frames: int) -> float:
    """The paper's DQN at ``frames``, interpolated linearly between the points read off."""
    pts = sorted(PAPER_DQN[game].items())
    if frames <= pts[0][0]:
        return pts[0][1] * frames / pts[0][0]
    for (f0, r0), (f1, r1) in zip(pts, pts[1:]):
        if frames <= f1:
            return r0 + (r1 - r0) * (frames - f0) / (f1 - f0)
    return pts[-1][1]


def last_row(path: Path) -> dict:
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return rows[-1] if rows else {}


def run_game(args, game: str, out: Path) -> dict:
    run_dir = out / game
    flags = [
        "--env",
        f"MinAtar/{game}-v1",
        "--full-action-space",
        "on",
        "--num-actors",
        args.num_actors,
        "--envs-per-actor",
        args.envs_per_actor,
        "--total-env-frames",
        args.frames,
        "--eval-period",
        max(args.frames // args.evals, 1),
        "--eval-episodes",
        args.eval_episodes,
        "--log-interval",
        10,
        "--seed",
        args.seed,
        "--snapshot-interval",
        -1,
    ]
    t0 = time.monotonic()
    run = SystemRun(flags, run_dir, pss=False).start()
    run.watch(lambda r: False, args.timeout)
    code = run.stop() if run.alive() else run.proc.returncode
    wall = time.monotonic() - t0
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    ev = last_row(run_dir / "evals.csv")
    frames = int(summary.get("env_frames") or 0)
    return {
        "game": game,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "env_frames": frames,
        "learner_steps": summary.get("learner_steps"),
        "eval_return": float(ev["mean"]) if ev else None,
        "eval_frames": int(ev["env_frames"]) if ev else None,
        "train_mean_100": summary.get("mean_return_100"),
        "paper_dqn_at_budget": round(paper_at(game, frames or args.frames), 2),
        "run_dir": str(run_dir),
    }


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0], prog="python -m benchmarks.minatar_curves")
    p.add_argument("--frames", type=POSITIVE_INT, default=500_000, help="env frames per game")
    p.add_argument("--games", nargs="+", default=GAMES, choices=GAMES)
    p.add_argument("--evals", type=POSITIVE_INT, default=10, help="evaluations over the budget")
    p.add_argument("--eval-episodes", type=POSITIVE_INT, default=20)
    p.add_argument("--num-actors", type=POSITIVE_INT, default=2)
    p.add_argument("--envs-per-actor", type=POSITIVE_INT, default=4)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per game at most")
    p.add_argument("--out-dir", default="runs/minatar")
    args = p.parse_args(argv)
    out = Path(args.out_dir) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    print(describe_machine(m), flush=True)
    rows = []
    for game in args.games:
        load = loadavg()
        r = run_game(args, game, out)
        r["load_before"] = load
        rows.append(r)
        print(f"{game}: {r}", flush=True)
    print(
        table(
            ["game", "env frames", "wall", "eval score", "train mean100", "paper DQN", "load before"],
            [
                [
                    r["game"],
                    r["env_frames"],
                    f"{r['wall_s']:.0f} s",
                    r["eval_return"],
                    r["train_mean_100"],
                    r["paper_dqn_at_budget"],
                    r["load_before"][0],
                ]
                for r in rows
            ],
            title=f"MinAtar, {args.frames:,} env frames per game",
        )
    )
    from learner.plot import main as plot_main

    plot_main(
        [r["run_dir"] for r in rows if Path(r["run_dir"], "metrics.csv").exists()] + ["--out", str(out / "minatar.png")]
    )
    final_json({"machine": m, "frames": args.frames, "games": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
