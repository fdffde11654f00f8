"""learner.plot on synthetic run directories: a real PNG of the asked size, with and without
episodes.csv, several runs, rows a live run is still writing, and bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (a matplotlib dependency)

from learner.plot import load_run, main, read_csv_columns, rolling_mean, run_labels  # noqa: E402
from learner.run_log import EPISODE_FIELDS, METRIC_FIELDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def make_run(
    d: Path, rows: int = 40, episodes: int | None = 300, seed: int = 0, partial_last_line: bool = False
) -> Path:
    """A run directory as the trainer writes it: mean_return_100 and loss empty/NaN early."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        for i in range(rows):
            learning = i >= 5
            w.writerow(
                {
                    "wall_s": 5.0 * (i + 1),
                    "env_frames": 4000 * (i + 1),
                    "agent_steps": 1000 * (i + 1),
                    "learner_steps": 100 * max(i - 4, 0),
                    "policy_version": 2 * max(i - 4, 0),
                    "episodes": 3 * i,
                    "mean_return_100": "" if i < 3 else 10 + i,
                    "mean_return_greedy_20": "",
                    "env_frames_per_s": 800 + rng.normal(0, 20),
                    "agent_steps_per_s": 200.0,
                    "updates_per_s": 20.0 if learning else 0.0,
                    "replay_size": 1000 * (i + 1),
                    "replay_sampleable": 1000 * i,
                    "replay_rejected": 0,
                    "loss": 1.0 / (i + 1) if learning else float("nan"),
                    "mean_q": 0.1 * i,
                    "actors_alive": 2,
                }
            )
        if partial_last_line:
            f.write("205.0,164000,41000,3")  # a row the trainer is still writing
    if episodes:
        with open(d / "episodes.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=EPISODE_FIELDS)
            w.writeheader()
            for k in range(episodes):
                w.writerow(
                    {
                        "wall_s": 0.6 * (k + 1),
                        "env_frames": 500 * (k + 1),
                        "score": k / 10 + rng.normal(0, 5),
                        "agent_steps": 125,
                        "epsilon": 0.4,
                    }
                )
    return d


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()  # decodes the whole image: a truncated file fails here
        return im.size


def test_one_run_with_episodes_gives_a_png_of_the_asked_size(tmp_path, capsys):
    run = make_run(tmp_path / "breakout-a")
    out = tmp_path / "curve.png"
    assert main([str(run), "--out", str(out), "--size", "1200x800"]) == 0
    assert png_size(out) == (1200, 800)
    assert "wrote" in capsys.readouterr().out


def test_several_runs_with_and_without_episodes_csv(tmp_path):
    a = make_run(tmp_path / "x" / "run", seed=1)
    b = make_run(tmp_path / "y" / "run", episodes=None, seed=2, partial_last_line=True)
    c = make_run(tmp_path / "other", rows=10, episodes=20, seed=3)
    out = tmp_path / "all.png"
    assert main([str(a), str(b), str(c), "--out", str(out)]) == 0
    assert png_size(out) == (1600, 1000)  # the default size
    assert run_labels([str(a), str(b), str(c)]) == ["x/run", "y/run", "other"]
    # The partial last row is skipped; the 40 full rows are kept.
    assert len(load_run(b).metrics["env_frames"]) == 40 and load_run(b).episodes is None


def test_the_evaluators_curve_is_read_and_drawn(tmp_path):
    from learner.run_log import EVAL_FIELDS

    run = make_run(tmp_path / "with-evals")
    with open(run / "evals.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=EVAL_FIELDS)
        w.writeheader()
        for k in range(4):
            w.writerow(
                {
                    "wall_s": 50.0 * (k + 1),
                    "env_frames": 40_000 * (k + 1),
                    "episodes": 10,
                    "epsilon": 0.001,
                    "mean": 5.0 * k,
                    "median": 5.0 * k,
                    "min": 0.0,
                    "max": 9.0 * k,
                }
            )
    loaded = load_run(run)
    assert loaded.evals["mean"].tolist() == [0.0, 5.0, 10.0, 15.0]
    assert load_run(make_run(tmp_path / "without")).evals is None
    out = tmp_path / "evals.png"
    plain = tmp_path / "plain.png"
    assert main([str(run), "--out", str(out)]) == 0
    assert main([str(tmp_path / "without"), "--out", str(plain)]) == 0
    assert out.read_bytes() != plain.read_bytes()  # the evaluation curve is drawn


def test_a_run_without_any_score_yet_still_plots(tmp_path):
    run = make_run(tmp_path / "early", rows=2, episodes=None)  # mean_return_100 empty, loss NaN
    out = tmp_path / "early.png"
    assert main([str(run), "--out", str(out), "--size", "800x600", "--dpi", "80"]) == 0
    assert png_size(out) == (800, 600)


def test_rolling_mean_of_the_last_window():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    np.testing.assert_allclose(rolling_mean(x, 3), [1.0, 1.5, 2.0, 3.0, 17 / 3])
    np.testing.assert_allclose(rolling_mean(x, 100), np.cumsum(x) / np.arange(1, 6))


def test_csv_reading_skips_incomplete_rows(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("wall_s,env_frames,loss\n1,100,\n2,200,0.5\n,300,0.4\n3,abc,0.3\n4,400,0.2,extra\n5,500")
    cols = read_csv_columns(p, ("wall_s", "env_frames"))
    np.testing.assert_array_equal(cols["env_frames"], [100, 200])
    assert np.isnan(cols["loss"][0]) and cols["loss"][1] == 0.5


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_dir", "not a directory"),
        ("empty_dir", "no metrics.csv"),
        ("header_only", "no complete rows"),
        ("empty_file", "no column"),
        ("wrong_columns", "no column env_frames"),
        ("binary", "cannot be read"),
        ("bad_episodes", "episodes.csv: no column score"),
        ("out_suffix", "unsupported image format"),
        ("out_dir", "does not exist"),
        ("size", "WIDTHxHEIGHT"),
        ("no_out", "--out"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, needle):
    good = make_run(tmp_path / "good", rows=5, episodes=None)
    d = tmp_path / "bad"
    d.mkdir()
    if case == "header_only":
        (d / "metrics.csv").write_text(",".join(METRIC_FIELDS) + "\n")
    elif case == "empty_file":
        (d / "metrics.csv").write_text("")
    elif case == "wrong_columns":
        (d / "metrics.csv").write_text("wall_s,frames\n1,2\n")
    elif case == "binary":
        (d / "metrics.csv").write_bytes(b"\xff\xfe\x00\x81garbage\n")
    elif case == "bad_episodes":
        (d / "metrics.csv").write_text((good / "metrics.csv").read_text())
        (d / "episodes.csv").write_text("wall_s,env_frames\n1,2\n")
    run = {"missing_dir": str(tmp_path / "nope")}.get(case, str(d))
    args = {
        "out_suffix": [str(good), "--out", str(tmp_path / "c.xyz")],
        "out_dir": [str(good), "--out", str(tmp_path / "nodir" / "c.png")],
        "size": [str(good), "--out", str(tmp_path / "c.png"), "--size", "big"],
        "no_out": [str(good)],
    }.get(case, [str(good), run, "--out", str(tmp_path / "c.png")])
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not list(tmp_path.glob("c.*"))  # nothing written


def test_real_entry_point(tmp_path):
    run = make_run(tmp_path / "r", rows=8, episodes=30)
    ok = subprocess.run(
        [sys.executable, "-m", "learner.plot", str(run), "--out", str(tmp_path / "c.png"), "--size", "640x480"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert png_size(tmp_path / "c.png") == (640, 480)
    bad = subprocess.run(
        [sys.executable, "-m", "learner.plot", str(tmp_path / "none"), "--out", str(tmp_path / "d.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not (tmp_path / "d.png").exists()
