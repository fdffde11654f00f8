"""Bad input to ``learner.main``: one line on stderr naming the flag or file and the value,
exit code 2, within a few seconds, the run directory untouched. One table per class of
bad input: flags, environments, paths, run directories from elsewhere, cluster addresses."""

import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from learner.main import main

ROOT = Path(__file__).resolve().parents[2]


def run_main(capsys, *argv):
    start = time.monotonic()
    code = main(list(argv))
    seconds = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert seconds < 10, f"{argv} took {seconds:.1f}s"
    return code, err


def tree(d: Path) -> dict:
    """Every path under ``d`` with its bytes (None for a directory)."""
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def assert_one_line(code, err, *needles):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--env", "ALE/NoSuchGame-v5"], "ALE/NoSuchGame-v5"),
        (["--num-actors", "0"], "--num-actors=0"),
        (["--replay-capacity", "-5"], "--replay-capacity=-5"),
        (["--env", "CartPole-v1", "--batch-size", "512", "--replay-capacity", "100"], "--batch-size=512"),
        (["--num-actors", "many"], "many"),
        (["--no-such-flag", "1"], "--no-such-flag"),
        (["--resume", "/nonexistent/run"], "/nonexistent/run"),
        # wrong types
        (["--lr", "fast"], "--lr"),
        (["--dueling", "maybe"], "--dueling"),
        (["--preset", "dqn-from-1913"], "--preset"),
        (["--loss", "l1"], "--loss"),
        (["--total-env-frames", "1e6"], "--total-env-frames"),
        (["--num-actors"], "--num-actors"),
        # out of range, NaN and infinity included
        (["--env", "CartPole-v1", "--lr", "nan"], "--lr=nan"),
        (["--env", "CartPole-v1", "--lr", "inf"], "--lr=inf"),
        (["--env", "CartPole-v1", "--gamma", "1.5"], "--gamma=1.5"),
        (["--env", "CartPole-v1", "--epsilon-base", "nan"], "--epsilon-base=nan"),
        (["--env", "CartPole-v1", "--epsilon-final", "2"], "--epsilon-final=2"),
        (["--env", "CartPole-v1", "--n-step", "0"], "--n-step=0"),
        (["--env", "CartPole-v1", "--priority-alpha", "-0.1"], "--priority-alpha=-0.1"),
        (["--env", "CartPole-v1", "--replay-ratio", "-1"], "--replay-ratio=-1"),
        (["--env", "CartPole-v1", "--snapshot-interval", "-2"], "--snapshot-interval=-2"),
        (["--env", "CartPole-v1", "--time-limit", "nan"], "--time-limit=nan"),
        (["--env", "CartPole-v1", "--log-interval", "0"], "--log-interval=0"),
        (["--env", "CartPole-v1", "--seed", "-1"], "--seed=-1"),
        (["--env", "CartPole-v1", "--stop-return", "nan"], "--stop-return=nan"),
        (["--env", "CartPole-v1", "--num-cpus", "0"], "--num-cpus=0"),
        (["--env", "CartPole-v1", "--envs-per-actor", "0"], "--envs-per-actor=0"),
        (["--env", "CartPole-v1", "--device", "tpu"], "--device=tpu"),
        (["--env", "CartPole-v1", "--learning-starts", "10", "--batch-size", "64"], "--batch-size=64"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(capsys, tmp_path, argv, needle):
    code, err = run_main(capsys, *argv, "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, needle)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- environments


class _ImageEnv(gymnasium.Env):
    """A registered env with a non-flat, non-Atari Box observation (uint8[8, 8, 3])."""

    observation_space = gymnasium.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((8, 8, 3), np.uint8), 0.0, True, False, {}


if "RaydqnTest/Image-v0" not in gymnasium.registry:
    gymnasium.register("RaydqnTest/Image-v0", entry_point=_ImageEnv)


@pytest.mark.parametrize(
    "env_id,needles",
    [
        ("Pendulum-v1", ["Pendulum-v1", "only Discrete actions"]),  # continuous actions
        ("RaydqnTest/Image-v0", ["RaydqnTest/Image-v0", "only flat Box"]),  # image, not Atari
        ("CarRacing-v3", ["CarRacing-v3"]),  # image observation, continuous (or box2d missing)
        ("FrozenLake-v1", ["FrozenLake-v1", "only flat Box"]),  # Discrete observation
        ("Blackjack-v1", ["Blackjack-v1", "only flat Box"]),  # Tuple observation
        ("NoSuchEnv-v0", ["'NoSuchEnv-v0'", "unknown environment"]),
        ("ALE/NoSuchGame-v5", ["ALE/NoSuchGame-v5"]),
        ("", ["--env="]),
    ],
)
def test_envs_we_cannot_serve(capsys, tmp_path, env_id, needles):
    code, err = run_main(capsys, "--env", env_id, "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, *needles)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- paths


def test_paths(capsys, tmp_path):
    """A file where a directory is expected and a missing one, for --run-dir and --resume."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--run-dir", str(a_file)], [str(a_file), "is a file"]),
        (["--run-dir", str(a_file / "run")], [str(a_file), "is a file"]),
        (["--resume", str(a_file)], [str(a_file), "is a file"]),
        (["--resume", str(tmp_path / "missing")], [str(tmp_path / "missing"), "no such directory"]),
        (["--resume", str(empty)], [str(empty), "no config.json"]),
    ]
    before = tree(tmp_path)
    for argv, needles in cases:
        code, err = run_main(capsys, "--env", "CartPole-v1", *argv)
        assert_one_line(code, err, *needles)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- run directories


def _cartpole_signature():
    from common.config import Config, resolve
    from common.envs import describe_env
    from common.networks import signature_for

    cfg = resolve(Config(), atari=False, cuda=False)
    return signature_for(describe_env("CartPole-v1"), cfg.learner)


def _checkpoint(path, **overrides):
    from learner.checkpoint import save_checkpoint

    payload = dict(learner_state={}, counters={}, signature=_cartpole_signature(), config={})
    payload.update(overrides)
    save_checkpoint(path, **payload)


CARTPOLE_CONFIG = '{"env": {"env_id": "CartPole-v1"}}'


def _torch_save(obj):
    def write(path):
        import torch

        torch.save(obj, path)

    return write


@pytest.mark.parametrize(
    "name,config_json,write_checkpoint,needles",
    [
        ("truncated config.json", '{"env": {"env_id": "CartPole', None, ["config.json", "unreadable"]),
        ("config.json not utf-8", b"\xff\xfe\x00garbage", None, ["config.json", "unreadable"]),
        ("config.json not an object", "[1, 2]", None, ["config.json", "not a JSON object"]),
        (
            "config.json from another version",
            '{"env": {"env_id": "CartPole-v1", "frame_skip": 4}}',
            None,
            ["config.json", "frame_skip"],
        ),
        ("config.json with an unknown section", '{"evaluation": {}}', None, ["config.json", "evaluation"]),
        ("config.json with a bad value", '{"actors": {"num_actors": 0}}', None, ["config.json", "--num-actors=0"]),
        ("config.json with a wrong type", '{"actors": {"num_actors": "many"}}', None, ["config.json"]),
        ("config.json of an env we cannot serve", '{"env": {"env_id": "Pendulum-v1"}}', None, ["Pendulum-v1"]),
        ("no checkpoint", CARTPOLE_CONFIG, None, ["checkpoint.pt"]),
        (
            "truncated checkpoint",
            CARTPOLE_CONFIG,
            lambda p: p.write_bytes(b"\x80\x02 truncated"),
            ["checkpoint.pt", "unreadable"],
        ),
        ("empty checkpoint", CARTPOLE_CONFIG, lambda p: p.write_bytes(b""), ["checkpoint.pt", "unreadable"]),
        ("checkpoint is a directory", CARTPOLE_CONFIG, lambda p: p.mkdir(), ["checkpoint.pt"]),
        (
            "checkpoint of something else",
            CARTPOLE_CONFIG,
            _torch_save({"weights": 1}),
            ["checkpoint.pt", "not a raydqn checkpoint"],
        ),
        (
            "checkpoint with a malformed field",
            CARTPOLE_CONFIG,
            _torch_save({"version": 1, "learner": {}, "counters": {}, "signature": None, "config": {}}),
            ["checkpoint.pt", "signature not a dict"],
        ),
        (
            "checkpoint of another version",
            CARTPOLE_CONFIG,
            _torch_save({"version": 99, "learner": {}, "counters": {}, "signature": {}, "config": {}}),
            ["checkpoint.pt", "version 99"],
        ),
        (
            "checkpoint of another env",
            CARTPOLE_CONFIG,
            lambda p: _checkpoint(
                p, signature=dict(_cartpole_signature(), frame_shape=[84, 84], stack_size=4, num_actions=18)
            ),
            ["checkpoint.pt", "trained on"],
        ),
        (
            "checkpoint whose weights do not fit",
            CARTPOLE_CONFIG,
            lambda p: _checkpoint(p, learner_state={"online": {}}),
            ["checkpoint.pt", "does not fit"],
        ),
    ],
)
def test_run_dirs_from_elsewhere_are_left_as_they_were(capsys, tmp_path, name, config_json, write_checkpoint, needles):
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.json"
    config.write_bytes(config_json if isinstance(config_json, bytes) else config_json.encode())
    if write_checkpoint is not None:
        write_checkpoint(run / "checkpoint.pt")
    (run / "metrics.csv").write_text("wall_s\n1\n")
    (run / "replay-0.snapshot").write_bytes(b"snapshot bytes")
    before = tree(run)
    code, err = run_main(capsys, "--resume", str(run))
    assert_one_line(code, err, *needles)
    assert tree(run) == before


def test_corrupt_checkpoint_on_resume_loses_nothing(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"env": {"env_id": "CartPole-v1"}}')
    (run / "checkpoint.pt").write_bytes(b"\x80\x02 truncated")
    (run / "metrics.csv").write_text("wall_s\n1\n")
    before = tree(run)
    code, err = run_main(capsys, "--resume", str(run))
    assert code == 2 and len(err) == 1 and "checkpoint.pt" in err[0]
    assert tree(run) == before


def test_resume_with_another_env_is_refused(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(CARTPOLE_CONFIG)
    _checkpoint(run / "checkpoint.pt")
    before = tree(run)
    code, err = run_main(capsys, "--resume", str(run), "--env", "Acrobot-v1")
    assert_one_line(code, err, "checkpoint.pt", "trained on")
    assert tree(run) == before


def test_existing_run_dir_is_not_overwritten(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    code, err = run_main(capsys, "--env", "CartPole-v1", "--run-dir", str(run))
    assert_one_line(code, err, "--resume")
    assert (run / "config.json").read_text() == "{}"


# --------------------------------------------------------------------------- cluster addresses


@pytest.mark.parametrize(
    "address,needles",
    [
        ("127.0.0.1:1", ["--address=127.0.0.1:1", "no Ray cluster listens"]),
        ("ray://127.0.0.1:1", ["--address=ray://127.0.0.1:1", "no Ray cluster listens"]),
        ("no-such-host.invalid:6379", ["--address=no-such-host.invalid:6379"]),
        ("10.0.0.1", ["--address=10.0.0.1", "HOST:PORT"]),
        ("10.0.0.1:port", ["--address=10.0.0.1:port", "HOST:PORT"]),
        ("10.0.0.1:70000", ["--address=10.0.0.1:70000", "HOST:PORT"]),
    ],
)
def test_no_cluster_at_address_fails_fast_before_writing(capsys, tmp_path, address, needles):
    code, err = run_main(capsys, "--env", "CartPole-v1", "--address", address, "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, *needles)
    assert not (tmp_path / "run").exists()


def test_something_else_at_address_fails_fast(capsys, tmp_path):
    """A port that answers, but not as a Ray GCS (a proxy, another service): ray.init would
    retry it for a minute before failing with a traceback."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        code, err = run_main(
            capsys, "--env", "CartPole-v1", "--address", f"127.0.0.1:{port}", "--run-dir", str(tmp_path / "run")
        )
    finally:
        server.close()
    assert_one_line(code, err, f"--address=127.0.0.1:{port}")
    assert not (tmp_path / "run").exists()


def test_auto_with_no_cluster_fails_fast(capsys, tmp_path, monkeypatch):
    import ray._private.services as services

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir=None: None)
    code, err = run_main(capsys, "--env", "CartPole-v1", "--address", "auto", "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, "--address=auto", "no Ray cluster found")
    assert not (tmp_path / "run").exists()


def test_auto_following_ray_address_to_nothing_fails_fast(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    code, err = run_main(capsys, "--env", "CartPole-v1", "--address", "auto", "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, "--address=auto", "no Ray cluster listens", ":1 ")  # Ray names this node's IP
    assert not (tmp_path / "run").exists()


def test_unreachable_address_on_resume_leaves_the_run_as_it_was(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(CARTPOLE_CONFIG)
    _checkpoint(run / "checkpoint.pt")
    before = tree(run)
    code, err = run_main(capsys, "--resume", str(run), "--address", "127.0.0.1:1", "--total-env-frames", "5")
    assert_one_line(code, err, "--address=127.0.0.1:1")
    assert tree(run) == before


def test_placement_error_restores_the_run_dir(capsys, tmp_path, monkeypatch):
    """A run that never got going (the cluster cannot hold it) puts back config.json and
    removes what it wrote, without Ray: the trainer is replaced by one that fails at once."""
    import learner.main as entry
    from learner.fleet import PlacementError

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(CARTPOLE_CONFIG)
    _checkpoint(run / "checkpoint.pt")
    before = tree(run)

    class FailingTrainer:
        def run(self):
            (run / "ray.json").write_text("{}")
            (run / "tb").mkdir()
            (run / "tb" / "events").write_text("x")
            raise PlacementError("cannot place the run: this Ray instance has 1 CPUs")

    monkeypatch.setattr(entry, "build_trainer", lambda *a: FailingTrainer())
    code = entry.main(["--resume", str(run), "--total-env-frames", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert_one_line(code, err, "cannot place the run")
    assert tree(run) == before


def test_real_process_prints_no_traceback(tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "learner.main",
            "--env",
            "CartPole-v1",
            "--address",
            "127.0.0.1:1",
            "--run-dir",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "--address=127.0.0.1:1" in proc.stderr
    assert time.monotonic() - start < 30  # the process's imports included
    assert not (tmp_path / "r").exists()
