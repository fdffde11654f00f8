"""Bad input to ``learner.evaluate``: one line on stderr naming the flag or file and the
value, exit code 2, within a few seconds, and no file changed."""

import time

import pytest
import torch

from common.config import Config, resolve
from learner.checkpoint import save_checkpoint
from learner.evaluate import main


def tree(d):
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def cartpole(**sections):
    cfg = Config.from_dict({"env": {"env_id": "CartPole-v1"}, **sections})
    return resolve(cfg, atari=False, cuda=False)


def real_checkpoint(path, cfg=None, **overrides):
    from common.envs import describe_env
    from common.networks import signature_for
    from learner.dqn import build_learner

    cfg = cfg or cartpole()
    spec = describe_env("CartPole-v1")
    payload = dict(
        learner_state=build_learner(cfg, spec, torch.device("cpu")).state_dict(),
        counters={},
        signature=signature_for(spec, cfg.learner),
        config=cfg.to_dict(),
    )
    payload.update(overrides)
    save_checkpoint(path, **payload)


def write_bytes(data):
    return lambda p: p.write_bytes(data)


def make_dir(p):
    p.mkdir()
    real_checkpoint(p / "checkpoint.pt")


CHECKPOINTS = {
    "truncated": (write_bytes(b"\x80\x02 truncated"), ["ck.pt", "unreadable checkpoint"]),
    "empty": (write_bytes(b""), ["ck.pt", "unreadable checkpoint"]),
    "a run directory": (make_dir, ["ck.pt", "is a directory", "did you mean"]),
    "another version": (
        lambda p: torch.save({"version": 7, "learner": {}, "counters": {}, "signature": {}, "config": {}}, p),
        ["ck.pt", "version 7"],
    ),
    "not ours": (lambda p: torch.save([1, 2, 3], p), ["ck.pt", "not a raydqn checkpoint"]),
    "config of another version": (
        lambda p: real_checkpoint(p, config={"env": {"env_id": "CartPole-v1", "frame_skip": 4}}),
        ["ck.pt", "frame_skip"],
    ),
    "an env we cannot serve": (
        lambda p: real_checkpoint(p, config={"env": {"env_id": "Pendulum-v1"}}),
        ["Pendulum-v1", "only Discrete actions"],
    ),
    "an env that does not exist": (
        lambda p: real_checkpoint(p, config={"env": {"env_id": "NoSuchEnv-v0"}}),
        ["NoSuchEnv-v0", "unknown environment"],
    ),
    "trained on another env": (
        lambda p: real_checkpoint(p, config={"env": {"env_id": "Acrobot-v1"}}),
        ["ck.pt", "trained on"],
    ),
    "weights that do not fit": (
        lambda p: real_checkpoint(p, learner_state={"online": {"w": torch.zeros(2)}}),
        ["ck.pt", "do not fit"],
    ),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_bad_checkpoints(capsys, tmp_path, name):
    write, needles = CHECKPOINTS[name]
    write(tmp_path / "ck.pt")
    before = tree(tmp_path)
    start = time.monotonic()
    code = main(["--checkpoint", str(tmp_path / "ck.pt"), "--episodes", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - start < 10
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--episodes", "0"], ["--episodes=0"]),
        (["--episodes", "ten"], ["--episodes", "ten"]),
        (["--epsilon", "1.5"], ["--epsilon=1.5"]),
        (["--epsilon", "nan"], ["--epsilon=nan"]),
        (["--epsilon", "high"], ["--epsilon", "high"]),
        (["--seed", "-1"], ["--seed=-1"]),
        (["--seed", str(2**40)], ["--seed="]),
        (["--seed", str(2**31 - 8)], ["--seed=2147483640", "0..2^31-9"]),  # env 7 would play 2^31-1
        (["--video", "best.avi"], ["--video", ".avi"]),
        (["--video", "/no/such/dir/best.mp4"], ["--video", "does not exist"]),
        (["--video", "VIDEO_DIR.mp4"], ["--video", "is a directory"]),
        (["--video", "best.mp4"], ["--video", "flat-vector"]),  # CartPole has no screens
        (["--checkpoint", "MISSING"], ["--checkpoint", "no checkpoint"]),
        (["--no-such-flag"], ["--no-such-flag"]),
        ([], None),  # --checkpoint is required: argparse names it
    ],
)
def test_bad_flags(capsys, tmp_path, argv, needles):
    ck = tmp_path / "ck.pt"
    real_checkpoint(ck)
    (tmp_path / "VIDEO_DIR.mp4").mkdir()
    argv = [
        a.replace("VIDEO_DIR", str(tmp_path / "VIDEO_DIR")).replace("MISSING", str(tmp_path / "missing.pt"))
        for a in argv
    ]
    if argv and argv[0] == "--video" and not argv[1].startswith("/"):
        argv[1] = str(tmp_path / argv[1])
    if "--checkpoint" not in argv and argv:
        argv = ["--checkpoint", str(ck), *argv]
    before = tree(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles or ["--checkpoint"]:
        assert needle in err[0], (needle, err[0])
    assert tree(tmp_path) == before


def test_the_largest_seed_is_played(capsys, tmp_path):
    real_checkpoint(tmp_path / "ck.pt")
    assert main(["--checkpoint", str(tmp_path / "ck.pt"), "--episodes", "1", "--seed", str(2**31 - 9), "--json"]) == 0
    assert '"episodes": 1' in capsys.readouterr().out
