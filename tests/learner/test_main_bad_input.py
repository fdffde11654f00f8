"""Bad input: one line on stderr naming the problem, exit code 2, the run directory untouched."""

import subprocess
import sys
from pathlib import Path

import pytest

from learner.main import main

ROOT = Path(__file__).resolve().parents[2]


def run_main(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("argv,needle", [
    (["--env", "ALE/NoSuchGame-v5"], "ALE/NoSuchGame-v5"),
    (["--num-actors", "0"], "--num-actors=0"),
    (["--replay-capacity", "-5"], "--replay-capacity=-5"),
    (["--env", "CartPole-v1", "--batch-size", "512", "--replay-capacity", "100"], "--batch-size=512"),
    (["--num-actors", "many"], "many"),
    (["--no-such-flag", "1"], "--no-such-flag"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_flags_give_one_line_and_exit_2(capsys, tmp_path, argv, needle):
    code, err = run_main(capsys, *argv, "--run-dir", str(tmp_path / "run"))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert not (tmp_path / "run").exists()


def snapshot(d: Path):
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_corrupt_checkpoint_on_resume_loses_nothing(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"env": {"env_id": "CartPole-v1"}}')
    (run / "checkpoint.pt").write_bytes(b"\x80\x02 truncated")
    (run / "metrics.csv").write_text("wall_s\n1\n")
    before = snapshot(run)
    code, err = run_main(capsys, "--resume", str(run))
    assert code == 2 and len(err) == 1 and "checkpoint.pt" in err[0]
    assert snapshot(run) == before


def test_existing_run_dir_is_not_overwritten(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    code, err = run_main(capsys, "--env", "CartPole-v1", "--run-dir", str(run))
    assert code == 2 and "--resume" in err[0]
    assert (run / "config.json").read_text() == "{}"


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "learner.main", "--env", "ALE/NoSuchGame-v5", "--run-dir", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
