"""learner.evaluate on tiny checkpoints made here: score statistics, human-normalized
scores, the best episode's video read back frame by frame, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.atari_scores import ATARI_REFERENCE_SCORES, ale_id_of_rom, human_normalized, reference_scores
from common.config import Config, EnvConfig
from common.envs import AleVectorEnv, ScreenHook, _atari_rom, is_atari
from common.networks import build_q_network, network_signature
from learner.checkpoint import save_checkpoint
from learner.dqn import DQNLearner
from learner.evaluate import evaluate, main
from learner.video import BestGameRecorder

ROOT = Path(__file__).resolve().parents[2]
BREAKOUT, CARTPOLE = "ALE/Breakout-v5", "CartPole-v1"
SCREEN = (210, 160, 3)


def make_checkpoint(path: Path, env_id: str, signature_of: str | None = None, **env_overrides) -> Path:
    """A checkpoint of an untrained network for ``env_id``, laid out as Trainer.save() does.
    ``signature_of`` puts another env's network (and signature) in it."""
    torch.manual_seed(0)
    shape, stack, actions = ((84, 84), 4, 4) if (signature_of or env_id) == BREAKOUT else ((4,), 1, 2)
    learner = DQNLearner(build_q_network(shape, stack, actions), 1e-3, 1e-8, 10, 5)
    cfg = Config(env=EnvConfig(env_id=env_id, **env_overrides)).to_dict()
    save_checkpoint(
        path,
        learner.state_dict(),
        {"env_frames": 1000, "policy_version": 7},
        network_signature(shape, stack, actions),
        cfg,
    )
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # One thread, as main() sets: batched forward passes of a few envs gain nothing from
    # more, and on a busy 2-core machine thread contention makes them 10x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def read_mp4(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


# --------------------------------------------------------------------------- scores


def test_statistics_match_the_per_episode_scores(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.pt", CARTPOLE)
    r = evaluate(str(ckpt), episodes=7, epsilon=0.3, seed=3)
    s = np.array(r["scores"])
    assert r["env"] == CARTPOLE and r["episodes"] == len(s) == len(r["agent_steps"]) == 7
    assert r["mean"] == pytest.approx(s.mean()) and r["median"] == np.median(s)
    assert (r["min"], r["max"]) == (s.min(), s.max())
    assert len(set(s.tolist())) > 1  # eps 0.3 gives games of different lengths
    # CartPole pays 1 per step: each score is its game's length, counted independently.
    assert s.tolist() == [float(n) for n in r["agent_steps"]]
    assert r["human_normalized_mean"] is None and r["reference"] is None
    assert r["checkpoint"]["policy_version"] == 7
    assert evaluate(str(ckpt), episodes=7, epsilon=0.3, seed=3)["scores"] == r["scores"]  # seeded


def test_cli_prints_statistics_then_one_json_line(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt", CARTPOLE)
    assert main(["--checkpoint", str(ckpt), "--episodes", "3", "--epsilon", "0.5", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["episodes"] == 3 and "raw score: mean" in lines[1]
    assert main(["--checkpoint", str(ckpt), "--episodes", "3", "--epsilon", "0.5", "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result


# --------------------------------------------------------------------------- video


def test_breakout_mp4_is_the_best_episode_frame_by_frame(tmp_path):
    ckpt = make_checkpoint(tmp_path / "b.pt", BREAKOUT)
    video = tmp_path / "best.mp4"
    r = evaluate(str(ckpt), episodes=3, epsilon=0.3, seed=5, video=video)
    v = r["video"]
    assert v["episode"] == int(np.argmax(r["scores"])) and v["score"] == r["max"]
    # Every emulator frame of the episode: its agent steps (4 frames each, the last one
    # maybe cut short), the 1..30 no-ops and FIRE at the start, one FIRE per lost life.
    steps = r["agent_steps"][v["episode"]]
    assert 4 * (steps - 1) < v["emulator_frames"] <= 4 * steps + 30 + 1 + 5
    frames = read_mp4(video)
    assert len(frames) == v["frames_written"] == v["emulator_frames"]
    assert frames[0].shape == SCREEN and (v["width"], v["height"], v["fps"]) == (160, 210, 60.0)
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(60.0)
    cap.release()
    # Human-normalized: 100 (score - random) / (human - random), random 1.7, human 30.5.
    assert r["reference"] == {"random": 1.7, "human": 30.5}
    assert r["human_normalized_mean"] == pytest.approx(100 * (r["mean"] - 1.7) / 28.8)
    # Recording changes nothing about the games played.
    assert evaluate(str(ckpt), episodes=3, epsilon=0.3, seed=5)["scores"] == r["scores"]


def test_truncated_games_have_exactly_max_episode_frames(tmp_path):
    ckpt = make_checkpoint(tmp_path / "b.pt", BREAKOUT, max_episode_frames=300)
    r = evaluate(str(ckpt), episodes=2, epsilon=0.0, video=tmp_path / "t.mp4")
    assert r["video"]["emulator_frames"] == 300  # cut by the time limit, counted by ALE
    assert len(read_mp4(tmp_path / "t.mp4")) == 300


def test_gif_every_third_frame_at_20_fps(tmp_path):
    from PIL import Image

    ckpt = make_checkpoint(tmp_path / "b.pt", BREAKOUT, max_episode_frames=200)
    r = evaluate(str(ckpt), episodes=1, video=tmp_path / "b.gif")
    expected = math.ceil(200 / 3)
    assert r["video"]["frames_written"] == expected and r["video"]["fps"] == 20.0
    with Image.open(tmp_path / "b.gif") as im:
        assert im.size == (160, 210)
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    # Pillow folds identical consecutive frames into one longer frame: the length is exact.
    assert sum(durations) == 50 * expected and im.n_frames <= expected


class _Collect(ScreenHook):
    def __init__(self):
        self.events = []

    def new_game(self, i):
        self.events.append(("new", i))

    def frame(self, i, rgb):
        assert rgb.shape == SCREEN and rgb.dtype == np.uint8
        self.events.append(("frame", i))


def test_screen_hook_sees_every_frame_and_changes_nothing():
    rom = _atari_rom(BREAKOUT)
    plain, hooked = AleVectorEnv(rom, 2, 11, max_episode_frames=400), AleVectorEnv(rom, 2, 11, max_episode_frames=400)
    hook = _Collect()
    hooked.set_screen_hook(hook)
    np.testing.assert_array_equal(plain.reset(), hooked.reset())
    rng = np.random.default_rng(0)
    games = 0
    for _ in range(250):
        actions = rng.integers(0, 4, size=2)
        a, b = plain.step(actions), hooked.step(actions)
        for field in ("frames", "rewards", "terminated", "truncated", "game_over", "restart_frames"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        games += int(a.game_over.sum())
    assert games >= 2  # 400-frame games: several ended and restarted
    # Frames of env 0 since its last new game == ALE's episode frame count.
    ev = [e for e in hook.events if e[1] == 0]
    last_new = max(k for k, e in enumerate(ev) if e[0] == "new")
    assert len(ev) - 1 - last_new == hooked.episode_frames()[0]
    assert hooked.screens().shape == (2, *SCREEN)
    np.testing.assert_array_equal(hooked.screens(), plain.screens())
    hooked.set_screen_hook(None)
    n = len(hook.events)
    hooked.step(np.zeros(2, np.int64))
    assert len(hook.events) == n


def test_recorder_keeps_the_best_counted_game_and_drops_aborted_starts():
    rec = BestGameRecorder(1)
    frame = lambda k: np.full(SCREEN, k, np.uint8)  # noqa: E731

    def game(n, first):
        for k in range(n):
            rec.frame(0, frame(first + k))

    rec.new_game(0)  # reset() before the first step
    rec.end_step()
    game(3, 0)
    rec.new_game(0)  # game 0 ended inside a step ...
    game(2, 100)  # ... no-ops of a start that ended at once ...
    rec.new_game(0)  # ... so the env reset again in the same step
    rec.end_step()
    assert rec.finished(0, score=5.0, episode=0) == 3
    game(4, 50)
    rec.new_game(0)
    rec.end_step()
    assert rec.finished(0, score=5.0, episode=1) == 4  # a tie keeps the earlier game
    game(2, 200)
    rec.new_game(0)
    rec.end_step()
    assert rec.finished(0, score=9.0, episode=2, keep=False) == 2  # over quota: not counted
    assert rec.best_episode == 0 and rec.best_score == 5.0
    assert [int(f[0, 0, 0]) for f in rec.best.frames(SCREEN)] == [0, 1, 2]
    rec.close()


# --------------------------------------------------------------------------- reference scores


def test_reference_table_covers_atari_57_by_registered_ale_id():
    assert len(ATARI_REFERENCE_SCORES) == 57
    for env_id, (random, human) in ATARI_REFERENCE_SCORES.items():
        assert is_atari(env_id) and _atari_rom(env_id), env_id
        assert human > random, env_id
    assert ale_id_of_rom("up_n_down") == "ALE/UpNDown-v5"
    assert reference_scores("BreakoutNoFrameskip-v4") == reference_scores(BREAKOUT) == (1.7, 30.5)
    assert reference_scores("ALE/Pong-v5") == (-20.7, 14.6)
    assert human_normalized("ALE/Pong-v5", -20.7) == 0.0 and human_normalized("ALE/Pong-v5", 14.6) == pytest.approx(
        100.0
    )
    assert reference_scores("ALE/Adventure-v5") is None and reference_scores(CARTPOLE) is None


# --------------------------------------------------------------------------- bad input


def test_a_minatar_video_is_refused_as_a_grid_not_as_a_vector(tmp_path, capsys):
    pytest.importorskip("minatar")
    checkpoint = make_checkpoint(tmp_path / "m.pt", "MinAtar/Breakout-v1")
    assert main(["--checkpoint", str(checkpoint), "--video", str(tmp_path / "v.mp4"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MinAtar grid of object channels" in err[0] and "flat-vector" not in err[0], err


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "no checkpoint"),
        ("garbage", "unreadable"),
        ("other_game", "trained on"),
        ("other_network", "do not fit"),
        ("suffix", "unsupported video format"),
        ("no_suffix", "unsupported video format"),
        ("no_dir", "does not exist"),
        ("cartpole_video", "videos need an ALE game"),
        ("episodes", "--episodes"),
        ("epsilon", "--epsilon"),
        ("bad_flag", "unrecognized"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, needle):
    breakout = make_checkpoint(tmp_path / "b.pt", BREAKOUT)
    cartpole = make_checkpoint(tmp_path / "c.pt", CARTPOLE)
    (tmp_path / "g.pt").write_bytes(b"not a checkpoint")
    # A Breakout config holding CartPole's network; a CartPole signature over other weights.
    make_checkpoint(tmp_path / "other_game.pt", BREAKOUT, signature_of=CARTPOLE)
    torch.save(
        {**torch.load(cartpole, weights_only=True), "learner": {"online": build_q_network((4,), 1, 3).state_dict()}},
        tmp_path / "other_net.pt",
    )
    args = {
        "missing": ["--checkpoint", str(tmp_path / "none.pt")],
        "garbage": ["--checkpoint", str(tmp_path / "g.pt")],
        "other_game": ["--checkpoint", str(tmp_path / "other_game.pt")],
        "other_network": ["--checkpoint", str(tmp_path / "other_net.pt")],
        "suffix": ["--checkpoint", str(breakout), "--video", str(tmp_path / "v.avi")],
        "no_suffix": ["--checkpoint", str(breakout), "--video", str(tmp_path / "v")],
        "no_dir": ["--checkpoint", str(breakout), "--video", str(tmp_path / "nodir" / "v.mp4")],
        "cartpole_video": ["--checkpoint", str(cartpole), "--video", str(tmp_path / "v.mp4")],
        "episodes": ["--checkpoint", str(cartpole), "--episodes", "0"],
        "epsilon": ["--checkpoint", str(cartpole), "--epsilon", "1.5"],
        "bad_flag": ["--checkpoint", str(cartpole), "--frobnicate"],
    }[case]
    try:
        code = main(args if case == "episodes" else args + ["--episodes", "1"])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    assert code == 2
    assert len(out.err.strip().splitlines()) == 1 and needle in out.err, out.err
    assert out.out == ""
    assert not list(tmp_path.glob("v*"))  # no video written


def test_real_entry_point_exit_code(tmp_path):
    ckpt = make_checkpoint(tmp_path / "b.pt", BREAKOUT)
    proc = subprocess.run(
        [sys.executable, "-m", "learner.evaluate", "--checkpoint", str(ckpt), "--video", "x.webm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "x.webm" in proc.stderr
