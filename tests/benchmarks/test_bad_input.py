"""Bad input to the benchmark programs: one line on stderr naming the flag and the value,
exit code 2, before any phase starts and before any directory is made."""

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SYSTEM_FLAGS = [  # benchmarks.learner's flags, shared by benchmarks.peers: learner.main's own errors
    (["--batch-size", "0"], ["--batch-size=0"]),
    (["--batch-size", "big"], ["--batch-size", "'big'"]),
    (["--replay-ratio", "-1"], ["--replay-ratio=-1"]),
    (["--replay-ratio", "nan"], ["--replay-ratio=nan"]),
    (["--num-actors", "0"], ["--num-actors=0"]),
    (["--replay-capacity", "8"], ["--replay-capacity=8"]),
    (["--threads", "0"], ["--threads", "'0'"]),
    (["--seed", "-3"], ["--seed=-3"]),
    (["--replay-shards", "0"], ["--replay-shards=0"]),
    (["--batch-size", "auto"], ["--batch-size", "'auto'"]),  # learner.main's auto: a benchmark picks a value
    (["--pin-cpus", "maybe"], ["--pin-cpus", "'maybe'"]),
    (["--window", "0"], ["--window", "'0'"]),
    (["--warmup", "-1"], ["--warmup", "'-1'"]),
    (["--worker-niceness", "40"], ["--worker-niceness", "'40'"]),
    (["--device", "tpu"], ["--device=tpu"]),
    (["--batch-size", "512", "--learning-starts", "100"], ["--batch-size=512", "--learning-starts=100"]),
    (["--learning-starts", "500000"], ["--learning-starts=500000", "--replay-capacity=100000"]),
    (["--env", "Pendulum-v1"], ["--env Pendulum-v1", "Discrete"]),
    (["--env", "ALE/NoSuchGame-v5"], ["--env ALE/NoSuchGame-v5"]),
    (["--out-dir", "FILE"], ["--out-dir", "is a file"]),
    (["--out-dir", "FILE/sub"], ["--out-dir", "is a file"]),
    (["--frobnicate"], ["--frobnicate"]),
]

CASES = {
    "actors": [
        (["--envs-per-actor", "0"], ["--envs-per-actor=0"]),  # learner.main's flag: its own error
        (["--max-actors", "-2"], ["--max-actors", "'-2'"]),
        (["--actor-counts", "1,x"], ["--actor-counts", "'1,x'"]),
        (["--actor-counts", "0,2"], ["--actor-counts", "'0,2'"]),
        (["--window", "inf"], ["--window", "'inf'"]),
        (["--replay-capacity", "ten"], ["--replay-capacity", "'ten'"]),
        (["--env", "CarRacing-v3"], ["--env CarRacing-v3"]),
        (["--env", "NoSuchEnv-v0"], ["--env NoSuchEnv-v0", "unknown environment"]),
        (["--out-dir", "FILE"], ["--out-dir", "is a file"]),
    ],
    "learner": SYSTEM_FLAGS,
    "peers": SYSTEM_FLAGS[:4]
    + [
        (["--rllib-seconds", "0"], ["--rllib-seconds", "'0'"]),
        (["--rllib-python", "/no/such/python"], ["--rllib-python /no/such/python"]),
        (["--env", "FrozenLake-v1"], ["--env FrozenLake-v1", "flat Box"]),
    ],
    "replay": [
        (["--games", "NoSuchGame"], ["--games", "NoSuchGame"]),
        (["--transitions", "4"], ["--transitions", "'4'"]),
        (["--batch-size", "-1"], ["--batch-size", "'-1'"]),
        (["--transitions", "100", "--batch-size", "512"], ["--batch-size=512", "--transitions=100"]),
        (["--num-envs", "0"], ["--num-envs", "'0'"]),
        (["--snapshot-dir", "FILE"], ["--snapshot-dir", "not an existing directory"]),
        (["--snapshot-dir", "MISSING"], ["--snapshot-dir", "not an existing directory"]),
        (["--seed", "x"], ["--seed", "'x'"]),
    ],
    "evaluator_memory": [
        (["--evaluations", "1"], ["--evaluations", "'1'"]),
        (["--evaluations", "many"], ["--evaluations", "'many'"]),
        (["--episodes", "0"], ["--episodes", "'0'"]),
        (["--env", "Pendulum-v1"], ["--env Pendulum-v1"]),
        (["--env", "ALE/NoSuchGame-v5"], ["--env ALE/NoSuchGame-v5"]),
        (["--frobnicate"], ["--frobnicate"]),
    ],
    "soak": [
        (["--minutes", "0"], ["--minutes", "'0'"]),
        (["--minutes", "5", "--warmup-minutes", "8"], ["--warmup-minutes=8", "--minutes=5"]),
        (["--every", "-5"], ["--every", "'-5'"]),
        (["--replay-capacity", "10"], ["--replay-capacity", "'10'"]),
        (["--snapshot-interval", "-0.5"], ["--snapshot-interval=-0.5"]),
        (["--kill-every", "soon"], ["--kill-every", "'soon'"]),
        (["--env", "Pendulum-v1"], ["--env Pendulum-v1"]),
        (["--out-dir", "FILE"], ["--out-dir", "is a file"]),
    ],
    "gpu_suite": [
        (["--device", "cpu", "--out", "FILE/suite.json"], ["--out", "is a file, not a directory"]),
        (["--device", "cpu", "--out", "MISSING/suite.json"], ["--out", "does not exist"]),
        (["--device", "cpu", "--out", "."], ["--out", "is a directory"]),
        (["--device", "tpu", "--out", "suite.json"], ["--device", "'tpu'"]),
    ],
    "chaos": [
        (["--settle", "-1"], ["--settle", "'-1'"]),
        (["--settle", "nan"], ["--settle", "'nan'"]),
        (["--env", "Blackjack-v1"], ["--env Blackjack-v1"]),
        (["--out-dir", "FILE"], ["--out-dir", "is a file"]),
        (["--out-dir", "FILE/runs"], ["--out-dir", "is a file"]),
    ],
}


def tree(d):
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize(
    "program,argv,needles", [(prog, argv, needles) for prog, cases in CASES.items() for argv, needles in cases]
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, monkeypatch, program, argv, needles):
    monkeypatch.chdir(tmp_path)  # default out dirs (runs/soak, runs/chaos) would land here
    (tmp_path / "FILE").write_text("a file")
    argv = [a.replace("FILE", str(tmp_path / "FILE")).replace("MISSING", str(tmp_path / "missing")) for a in argv]
    before = tree(tmp_path)
    module = importlib.import_module(f"benchmarks.{program}")
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert time.monotonic() - start < 10
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error:"), out.err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert out.out == ""  # not even the machine's description: nothing started
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "argv", [["--batch-size", "0"], ["--replay-ratio", "-1"], ["--device", "tpu"], ["--num-actors", "0"]]
)
def test_a_learner_flag_gets_learner_mains_own_error(capsys, tmp_path, monkeypatch, argv):
    """benchmarks.learner takes these flags from learner.main's parser and checks them with its
    Config: a bad value is refused in the same words."""
    from benchmarks import learner as bench
    from learner import main as learner_main

    monkeypatch.chdir(tmp_path)
    assert learner_main.main(argv) == 2
    theirs = capsys.readouterr().err.strip()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    ours = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and ours == theirs and "\n" not in ours, (ours, theirs)
    assert list(tmp_path.iterdir()) == []


def test_gpu_suite_refuses_cuda_where_there_is_none(capsys, tmp_path):
    import torch

    from benchmarks import gpu_suite

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(["--out", str(tmp_path / "suite.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--device cuda" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_real_process_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--env", "Pendulum-v1", "--out-dir", str(tmp_path / "c")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists()
