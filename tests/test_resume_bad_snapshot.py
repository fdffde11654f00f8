"""A replay snapshot that cannot be read on resume is moved aside (never deleted), the
user sees one line saying so, and the run goes on with an empty replay."""

import subprocess
import sys
from pathlib import Path

import pytest

from common.config import Config
from replay_server.remote import ReplayServer

ROOT = Path(__file__).resolve().parents[1]

BAD_SNAPSHOTS = {
    "garbage": b"not a snapshot at all",
    "empty": b"",
    "truncated header": b"\x93\x01",
}


def _good_snapshot(path: Path) -> bytes:
    server = ReplayServer(capacity=64, stack_size=1, n_step=1, gamma=0.99)
    server.save_snapshot(str(path))
    return path.read_bytes()


@pytest.mark.parametrize("name", [*BAD_SNAPSHOTS, "cut short", "other settings"])
def test_bad_snapshot_is_moved_aside_and_reported_in_stats(tmp_path, name):
    path = tmp_path / "replay-0.snapshot"
    if name == "cut short":
        path.write_bytes(_good_snapshot(path)[:-7])
    elif name == "other settings":
        _good_snapshot(path)  # a stack of 1; the replay below stacks 4
    else:
        path.write_bytes(BAD_SNAPSHOTS[name])
    content = path.read_bytes()
    server = ReplayServer(capacity=64, stack_size=4, n_step=1, gamma=0.99, snapshot_path=str(path))
    stats = server.stats()
    assert stats["restored_records"] == 0 and stats["size"] == 0
    assert str(path) in stats["restore_error"] and "moved to" in stats["restore_error"]
    aside = list(tmp_path.glob("replay-0.snapshot.bad-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content and not path.exists()


def test_good_snapshot_reports_no_error(tmp_path):
    path = tmp_path / "replay-0.snapshot"
    _good_snapshot(path)
    server = ReplayServer(capacity=64, stack_size=1, n_step=1, gamma=0.99, snapshot_path=str(path))
    assert server.stats()["restore_error"] is None


def test_fleet_prints_a_shards_restore_error_once(tmp_path, capsys, monkeypatch):
    """Without Ray: the shard's stats come back as they are (``ray.get`` of a plain dict)."""
    import learner.fleet as fleet_module
    from common.envs import describe_env

    monkeypatch.setattr(fleet_module.ray, "get", lambda ref, timeout=None: ref)
    fleet = fleet_module.Fleet(Config(), describe_env("CartPole-v1"), tmp_path)
    stats = ReplayServer(capacity=64, stack_size=1, n_step=1, gamma=0.99).stats()
    stats["restore_error"] = "run/replay-0.snapshot: file ends inside the header (moved to run/replay-0.snapshot.bad-1)"
    fleet._shard_stats(0, stats)
    fleet.shard_stats = [stats]
    fleet._shard_stats(0, stats)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["replay-0: snapshot unusable, starting empty: " + stats["restore_error"]]


@pytest.mark.ray
def test_resume_with_a_corrupt_snapshot_goes_on(tmp_path):
    """The real entry point on a real Ray: a run resumed from a good checkpoint and a
    garbage snapshot says so in one line on its output, trains, and keeps the bad file."""
    import torch

    from common.config import dumps, resolve
    from common.envs import describe_env
    from common.networks import signature_for
    from learner.checkpoint import save_checkpoint
    from learner.dqn import build_learner

    run = tmp_path / "run"
    run.mkdir()
    cfg = Config.from_dict(
        {
            "env": {"env_id": "CartPole-v1", "envs_per_actor": 2},
            "actors": {"num_actors": 1},
            "replay": {"replay_capacity": 2000, "learning_starts": 200},
            "learner": {"batch_size": 16, "device": "cpu"},
            "run": {"log_interval": 1.0, "run_dir": str(run), "time_limit": 120.0},
        }
    )
    spec = describe_env("CartPole-v1")
    cfg = resolve(cfg, atari=False, cuda=False)
    (run / "config.json").write_text(dumps(cfg))
    save_checkpoint(
        run / "checkpoint.pt",
        build_learner(cfg, spec, torch.device("cpu")).state_dict(),
        {},
        signature_for(spec, cfg.learner),
        cfg.to_dict(),
    )
    (run / "replay-0.snapshot").write_bytes(b"garbage, not a snapshot")
    proc = subprocess.run(
        [sys.executable, "-m", "learner.main", "--resume", str(run), "--total-learner-steps", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "snapshot unusable" in line]
    assert (
        len(lines) == 1 and lines[0].startswith("replay-0: snapshot unusable, starting empty:") and ".bad-" in lines[0]
    )
    aside = list(run.glob("replay-0.snapshot.bad-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"garbage, not a snapshot"
    assert '"learner_steps": 20' in proc.stdout
