"""Smoke tests of issue 21's two benchmark programs, without training or timing anything:
``benchmarks.minatar_presets`` (its flags, its resume logic over a fake results.jsonl, its
tables and figure drawn from fake result lines, learner.main never started) and
``benchmarks.heads_cost`` (its flags, and ``--quick`` printing every head and torso)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import heads_cost
from benchmarks import minatar_presets as mp

ROOT = Path(__file__).resolve().parents[2]


def line(game, preset, frames=1000, score=5.0, wall=60.0):
    """A result line as run_pair writes it (the fields the report reads)."""
    curve = [[frames // 2, wall / 2, score / 2, 0.0, score], [frames * 0.9, wall * 0.9, score, 1.0, score + 2]]
    return {
        "game": game,
        "preset": preset,
        "frames": frames,
        "env_frames": frames,
        "wall_s": wall,
        "curve": curve,
        "final_eval": {"mean": score, "min": 0.0, "max": score + 1, "episodes": 3, "env_frames": frames},
        "final_eval_mean": score,
        "train_mean_100": score - 1,
        "run_dir": "/nonexistent/run",
    }


def write_results(path: Path, lines: list[dict], extra: str = "") -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + extra)


@pytest.mark.parametrize("program", ["minatar_presets", "heads_cost"])
def test_help_runs(program):
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{program}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"usage: python -m benchmarks.{program}" in done.stdout
    assert ("--quick" if program == "heads_cost" else "--only-missing") in done.stdout


BAD = [
    (mp, ["--games", "Pong"], "Pong"),
    (mp, ["--games", "Breakout,Pong"], "Pong"),
    (mp, ["--presets", "apex,rainbowz"], "rainbowz"),
    (mp, ["--frames", "0"], "'0'"),
    (mp, ["--frames", "many"], "'many'"),
    (mp, ["--evals", "-1"], "'-1'"),
    (mp, ["--only-missing", "maybe"], "'maybe'"),
    (mp, ["--out-dir", "FILE"], "is a file"),
    (mp, ["--out-dir", "FILE/sub"], "is a file"),
    (mp, ["--num-actors", "0"], "'0'"),
    (heads_cost, ["--batch-sizes", "32", "0"], "'0'"),
    (heads_cost, ["--rounds", "x"], "'x'"),
    (heads_cost, ["--seconds", "0"], "'0'"),
    (heads_cost, ["--act-batch", "-2"], "'-2'"),
    (heads_cost, ["--frobnicate"], "--frobnicate"),
]


@pytest.mark.parametrize("module,argv,needle", BAD, ids=[f"{m.__name__}:{' '.join(a)}" for m, a, _ in BAD])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, monkeypatch, module, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("a file")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing made


def test_bad_input_from_the_command_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.minatar_presets", "--games", "Pong", "--out-dir", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Pong" in done.stderr
    assert not (tmp_path / "o").exists()


def test_pair_flags_leave_the_rest_to_the_preset(tmp_path):
    args = mp.parse_args(["--frames", "50000", "--games", "Seaquest", "--presets", "btr", "--out-dir", str(tmp_path)])
    flags = mp.pair_flags(args, "Seaquest", "btr")
    pairs = dict(zip(flags[::2], flags[1::2]))
    assert pairs["--env"] == "MinAtar/Seaquest-v1" and pairs["--preset"] == "btr"
    assert pairs["--full-action-space"] == "on" and pairs["--total-env-frames"] == "50000"
    assert pairs["--eval-period"] == "5000" and pairs["--eval-episodes"] == "20"
    for left in ("--repeat-action-probability", "--replay-ratio", "--eval-epsilon", "--batch-size", "--head"):
        assert left not in pairs  # sticky actions, the rate limiter and the rest: as the preset resolves them


def test_resume_skips_the_pairs_in_results(tmp_path):
    path = tmp_path / "results.jsonl"
    old = [line("Breakout", "apex"), line("Breakout", "rainbow"), line("Breakout", "iqn", frames=2000)]
    write_results(path, old, extra='{"game": "Asterix", "preset": "ap')  # a write cut short
    results = mp.load_results(path)
    assert [mp.pair_key(r) for r in results] == [mp.pair_key(r) for r in old]
    todo = mp.pending_pairs(["Breakout", "Asterix"], ["apex", "rainbow", "iqn"], 1000, results)
    assert todo == [("Breakout", "iqn"), ("Asterix", "apex"), ("Asterix", "rainbow"), ("Asterix", "iqn")]
    assert len(mp.pending_pairs(["Breakout"], ["apex", "iqn"], 1000, results, only_missing=False)) == 2
    assert mp.load_results(tmp_path / "none.jsonl") == []


def test_main_trains_only_the_missing_pairs_and_appends(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    write_results(out / "results.jsonl", [line("Breakout", "apex", score=4.0)])
    trained = []

    def fake_run_pair(args, game, preset, out_dir, m):
        trained.append((game, preset))
        return None if preset == "iqn" else line(game, preset, frames=args.frames, score=6.0)

    monkeypatch.setattr(mp, "run_pair", fake_run_pair)
    argv = ["--frames", "1000", "--games", "Breakout", "--out-dir", str(out)]
    assert mp.main(argv) == 1  # iqn "failed": not recorded, exit 1
    assert trained == [("Breakout", "rainbow"), ("Breakout", "iqn")]
    keys = [mp.pair_key(r) for r in mp.load_results(out / "results.jsonl")]
    assert keys == [("Breakout", "apex", 1000), ("Breakout", "rainbow", 1000)]
    assert (out / "Breakout.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "rainbow >= apex on 1 of 1 games" in printed and "failed: ['Breakout/iqn']" in printed
    trained.clear()
    mp.main(argv)
    assert trained == [("Breakout", "iqn")]  # the next run: only what is still missing


def test_tables_from_fake_lines():
    results = [line(g, p, score=s) for g, p, s in [("Breakout", "apex", 8), ("Breakout", "rainbow", 9)]]
    results += [line("Seaquest", "apex", score=3), line("Seaquest", "rainbow", score=2), line("Seaquest", "btr")]
    results += [line("Seaquest", "apex", frames=5000, score=99)]  # another budget: not in this table
    best = mp.latest(results, 1000)
    assert mp.rainbow_vs_apex(best, mp.GAMES) == (
        1,
        2,
        {**dict.fromkeys(mp.GAMES, "-"), "Breakout": "yes", "Seaquest": "no"},
    )
    text = mp.report(results, ["Breakout", "Seaquest"], ["apex", "rainbow", "iqn"], 1000)
    assert "rainbow >= apex on 1 of 2 games (target: 4 of 5)" in text
    assert "btr eval" in text and "iqn eval" in text and "99" not in text.split("Reference")[0]
    seaquest = next(r for r in text.splitlines() if r.startswith("Seaquest"))
    assert seaquest.split()[-1] == "no" and "1 min" in seaquest
    ref = text.split("Reference only")[1]
    assert "10M" in ref and "M-Rainbow" in ref and "17" in ref and "Asterix" not in ref


def test_figures_from_fake_lines(tmp_path):
    results = [line("Asterix", p, score=s, wall=w) for p, s, w in [("apex", 2, 4000), ("rainbow", 3, 9000)]]
    results[1]["final_eval"] = None  # a line whose final evaluation failed still draws
    drawn = mp.draw_all(results, 1000, tmp_path)
    assert drawn == [tmp_path / "Asterix.png"]
    assert (tmp_path / "Asterix.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "Asterix-runs.png").exists()  # the runs are gone: nothing for learner.plot


def test_heads_cost_quick_prints_every_head_and_torso():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.heads_cost", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    learner_part, acting_part = done.stdout.split("(b) actors'")
    for head in heads_cost.LEARNER_HEADS:
        assert any(r.split()[:1] == [head] for r in learner_part.splitlines()), head
    for torso in heads_cost.TORSOS:
        for head in heads_cost.ACT_HEADS:
            assert any(r.startswith(torso) and f" {head} " in r for r in acting_part.splitlines()), (torso, head)
    assert "foreign load" in learner_part and "foreign load" in acting_part
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(final["learner"]["8"]) == set(heads_cost.LEARNER_HEADS)
    assert final["acting_precision"]["nature/expected"] and final["quick"] is True


def test_a_run_directory_read_into_a_result_line(tmp_path):
    from learner.run_log import EVAL_FIELDS

    rows = [{"wall_s": 10.5, "env_frames": 100, "mean": 2.0, "min": 1.0, "max": 3.0}, {"wall_s": 20, "env_frames": 200}]
    text = ",".join(EVAL_FIELDS) + "\n" + "".join(",".join(str(r.get(f, "")) for f in EVAL_FIELDS) + "\n" for r in rows)
    (tmp_path / "evals.csv").write_text(text)
    assert mp.read_curve(tmp_path) == [[100.0, 10.5, 2.0, 1.0, 3.0]]  # a row without its score is left out
    (tmp_path / "config.json").write_text(json.dumps({"env": {"repeat_action_probability": 0.1}, "replay": {}}))
    kept = mp.kept_settings(tmp_path)
    assert kept["env.repeat_action_probability"] == 0.1 and kept["replay.replay_ratio"] is None
    assert mp.final_eval(tmp_path, 3, 0) is None  # no checkpoint: the evaluator's last point stands in
    assert mp.read_curve(tmp_path / "missing") == [] and mp.kept_settings(tmp_path / "missing") == {}
