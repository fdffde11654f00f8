"""Impossible algorithm settings given to ``learner.main``: Munchausen with a head it does not
support, an empty or reversed C51 support, too few atoms or quantiles, a torso for frames it
cannot take, and the same through a preset's values. Each ends with one line on stderr
naming the flag and the value, exit code 2, before anything starts (no Ray, no run dir).

Every case also passes ``--address 127.0.0.1:1``, where nothing listens: were the check to
come after the cluster connection, the error would name the address instead, so these tests
also show that the settings are refused first and never start a local Ray."""

import subprocess
import sys
import time

import pytest

from tests.learner.test_main_bad_input import ROOT, assert_one_line, run_main

CARTPOLE, MINATAR = "CartPole-v1", "MinAtar/Breakout-v1"
NOWHERE = ["--address", "127.0.0.1:1"]

CASES = [
    # Munchausen is for the expected and iqn heads only
    ([CARTPOLE, "--munchausen", "on", "--head", "c51"], ["--munchausen=on", "--head=c51"]),
    ([CARTPOLE, "--munchausen", "on", "--head", "qr"], ["--munchausen=on", "--head=qr"]),
    ([MINATAR, "--preset", "rainbow", "--munchausen", "on"], ["--munchausen=on", "--head=c51"]),  # the preset's head
    # C51's support
    ([CARTPOLE, "--v-min", "10", "--v-max", "-10"], ["--v-min=10", "--v-max=-10"]),
    ([CARTPOLE, "--v-min", "3", "--v-max", "3"], ["--v-min=3", "--v-max=3"]),
    ([MINATAR, "--preset", "rainbow", "--v-min", "150"], ["--v-min=150", "--v-max=100"]),  # above the preset's v_max
    ([CARTPOLE, "--num-atoms", "1"], ["--num-atoms=1"]),
    ([CARTPOLE, "--num-atoms", "0", "--head", "c51"], ["--num-atoms=0"]),
    # quantiles and IQN's samples
    ([CARTPOLE, "--num-quantiles", "0"], ["--num-quantiles=0"]),
    ([CARTPOLE, "--head", "qr", "--num-quantiles", "-3"], ["--num-quantiles=-3"]),
    ([CARTPOLE, "--head", "iqn", "--iqn-tau-samples", "0"], ["--iqn-tau-samples=0"]),
    ([CARTPOLE, "--head", "iqn", "--iqn-acting-samples", "0"], ["--iqn-acting-samples=0"]),
    ([CARTPOLE, "--head", "qr", "--kappa", "-1"], ["--kappa=-1"]),
    ([CARTPOLE, "--head", "iqn", "--kappa", "nan"], ["--kappa=nan"]),
    ([CARTPOLE, "--munchausen-l0", "0"], ["--munchausen-l0=0"]),
    ([CARTPOLE, "--munchausen-tau", "0"], ["--munchausen-tau=0"]),
    ([CARTPOLE, "--noisy-sigma0", "-0.5"], ["--noisy-sigma0=-0.5"]),
    # torsos for frames they cannot take
    ([CARTPOLE, "--torso", "impala"], ["--torso=impala", "Atari"]),
    ([MINATAR, "--torso", "impala"], ["--torso=impala", "Atari"]),
    ([MINATAR, "--preset", "btr", "--torso", "impala"], ["--torso=impala"]),
    ([CARTPOLE, "--torso-width", "0"], ["--torso-width=0"]),
    # not a choice at all (argparse's own one line)
    ([CARTPOLE, "--head", "mean"], ["--head", "mean"]),
    ([CARTPOLE, "--torso", "resnet"], ["--torso", "resnet"]),
]


@pytest.fixture(scope="module", autouse=True)
def warm_imports(tmp_path_factory):
    """The first call imports the env packages (seconds on a busy machine): done once here,
    outside run_main's timing, which then times the checks themselves."""
    from learner.main import main

    for env in (CARTPOLE, MINATAR):
        main(["--env", env, "--num-atoms", "1", *NOWHERE, "--run-dir", str(tmp_path_factory.mktemp("warm") / "run")])


def _id(argv):
    return " ".join(argv).replace("/", "_")


@pytest.mark.parametrize("argv,needles", CASES, ids=[_id(a) for a, _ in CASES])
def test_impossible_algorithm_settings_give_one_line_and_exit_2(capsys, tmp_path, argv, needles):
    env, *flags = argv
    code, err = run_main(capsys, "--env", env, *flags, *NOWHERE, "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, *needles)
    assert "127.0.0.1:1" not in err[0]  # refused before any cluster was looked for
    assert not (tmp_path / "run").exists()


# Through a real process: no traceback, nothing written. Two, side by side (each process pays
# for its own imports): the learner settings' own check, and the torso's against the env,
# which comes after the env is described and the preset resolved.
REAL = [
    ([CARTPOLE, "--munchausen", "on", "--head", "c51"], "--munchausen=on"),
    ([MINATAR, "--torso", "impala"], "--torso=impala"),
]


def test_real_processes_exit_2_with_one_line_and_no_traceback(tmp_path):
    start = time.monotonic()
    procs = []
    for i, (argv, _) in enumerate(REAL):
        env, *flags = argv
        cmd = [
            sys.executable,
            "-m",
            "learner.main",
            "--env",
            env,
            *flags,
            *NOWHERE,
            "--run-dir",
            str(tmp_path / f"r{i}"),
        ]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=180) for p in procs]
    for i, ((argv, needle), p, (out, err)) in enumerate(zip(REAL, procs, results)):
        assert p.returncode == 2, (argv, err)
        assert "Traceback" not in err and err.strip().count("\n") == 0, (argv, err)
        assert err.startswith("error:") and needle in err, (argv, err)
        assert not (tmp_path / f"r{i}").exists()
    assert time.monotonic() - start < 120  # each process's imports included, side by side
