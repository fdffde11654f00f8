"""Evaluate a checkpoint: ``python -m learner.evaluate --checkpoint RUN/checkpoint.pt --episodes 20``.

Plays the game the checkpoint was trained on, with the same preprocessing (no-op starts,
FIRE where the game needs it), eps-greedy with a small eps, and prints statistics of the
raw game score over whole games, the human-normalized score for the Atari-57 games (see
``common/atari_scores.py``) and, last, the same as one JSON line for scripts. The E envs
(at most 8) each play a fixed share of the episodes, so short games are not
over-represented the way the first N games to finish would be. ``--video best.mp4`` (or
``.gif``) records the best episode at the emulator's own size, 160x210 RGB, at the game's
own speed (ALE games only; :func:`write_video` says what each format holds).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import struct
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.cli import USAGE_ERROR, OneLineParser
from common.config import Config, ConfigError
from common.progress import Status

if TYPE_CHECKING:
    from common.env_spec import EnvSpec
    from common.envs import VectorEnv

VIDEO_SUFFIXES = (".mp4", ".gif")
MP4_FPS = 60.0  # the ALE emulator's frame rate (NTSC)
GIF_STRIDE = 3  # every 3rd emulator frame ...
GIF_FRAME_MS = 50  # ... shown for 50 ms: 20 fps, the game's own speed


class EvaluationError(ValueError):
    """Bad input to an evaluation (a video we cannot write, a game without screens); one line."""


def check_video_path(video: str | Path) -> Path:
    """The video path if we can write it there; EvaluationError naming the problem if not."""
    path = Path(video)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise EvaluationError(
            f"--video {video}: unsupported video format {path.suffix or '(no suffix)'!r}; use .mp4 or .gif"
        )
    if not path.parent.is_dir():
        raise EvaluationError(f"--video {video}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise EvaluationError(f"--video {video}: is a directory")
    return path


def check_checkpoint_path(checkpoint: str) -> None:
    """EvaluationError naming --checkpoint unless it is a file (a run directory is taken as a mistake)."""
    path = Path(checkpoint)
    if path.is_dir():
        hint = f"; did you mean {path / 'checkpoint.pt'}?" if (path / "checkpoint.pt").is_file() else ""
        raise EvaluationError(f"--checkpoint {checkpoint}: is a directory, not a checkpoint file{hint}")
    if not path.exists():
        raise EvaluationError(f"--checkpoint {checkpoint}: no checkpoint there (no such file)")


# --------------------------------------------------------------------------- recording


class _FrameFile:
    """The RGB frames of one game: lz4 blocks in an anonymous temporary file (deleted on
    close), so memory stays small even for 30-minute games."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.count = 0

    def append(self, rgb: np.ndarray) -> None:
        import lz4.block

        data = lz4.block.compress(np.ascontiguousarray(rgb).tobytes(), store_size=False)
        self.file.write(struct.pack("<I", len(data)))
        self.file.write(data)
        self.count += 1

    def frames(self, shape: tuple[int, ...]):
        """Yields the frames uint8[shape] in order."""
        import lz4.block

        size = int(np.prod(shape))
        self.file.flush()
        self.file.seek(0)
        for _ in range(self.count):
            (n,) = struct.unpack("<I", self.file.read(4))
            yield np.frombuffer(lz4.block.decompress(self.file.read(n), uncompressed_size=size), np.uint8).reshape(
                shape
            )

    def close(self) -> None:
        self.file.close()


class BestGameRecorder:
    """A ScreenHook (``common.envs.AleVectorEnv.set_screen_hook``) that keeps the frames of
    each env's game in progress and of the best finished game so far.

    Each ``step`` of the env may end a game of env i and start the next (``new_game(i)``);
    the evaluation loop then calls :meth:`end_step` and, for each finished episode the
    actor reports, :meth:`finished`. If a game ends during its own no-op start, the env
    resets it again in the same step without reporting an episode: a second ``new_game(i)``
    in one step drops the aborted start.
    """

    def __init__(self, num_envs: int):
        self.current = [_FrameFile() for _ in range(num_envs)]
        self.done: list[collections.deque[_FrameFile]] = [collections.deque() for _ in range(num_envs)]
        self._reset_this_step = [False] * num_envs
        self.shape: tuple[int, ...] | None = None
        self.best: _FrameFile | None = None
        self.best_score = -math.inf
        self.best_episode = -1

    # ScreenHook
    def new_game(self, i: int) -> None:
        old = self.current[i]
        self.current[i] = _FrameFile()
        if old.count and not self._reset_this_step[i]:
            self.done[i].append(old)
        else:
            old.close()
        self._reset_this_step[i] = True

    def frame(self, i: int, rgb: np.ndarray) -> None:
        self.shape = rgb.shape
        self.current[i].append(rgb)

    # evaluation loop
    def end_step(self) -> None:
        self._reset_this_step = [False] * len(self._reset_this_step)

    def finished(self, i: int, score: float, episode: int, keep: bool = True) -> int:
        """Env i's oldest finished game is episode ``episode``: kept if ``keep`` and it
        beats the best so far (on a tie, the lower episode index). Returns its emulator frames."""
        game = self.done[i].popleft() if self.done[i] else _FrameFile()
        frames = game.count
        if keep and (score > self.best_score or (score == self.best_score and episode < self.best_episode)):
            if self.best is not None:
                self.best.close()
            self.best, self.best_score, self.best_episode = game, score, episode
        else:
            game.close()
        return frames

    def close(self) -> None:
        for f in self.current:
            f.close()
        for q in self.done:
            for f in q:
                f.close()
        if self.best is not None:
            self.best.close()


def write_video(path: Path, frames, shape: tuple[int, ...]) -> int:
    """Write RGB frames ``uint8[H, W, 3]`` to ``path`` (.mp4 or .gif); returns the frames written.

    mp4 has every emulator frame at 60 fps, the game's own speed: the no-op start, the FIRE
    presses and all 4 frames of each agent step (frame skip), as many video frames as the
    game's ALE episode frame number. A GIF cannot show 60 fps (its frame delay is in 1/100 s
    and viewers slow delays under 2/100 s down), so it has every 3rd emulator frame at 20
    fps, still the game's own speed; Pillow merges identical consecutive frames into one
    longer frame, so a GIF may hold fewer frames while lasting as long. A GIF is built in
    memory: prefer mp4 for long games.
    """
    height, width = shape[:2]
    if path.suffix.lower() == ".mp4":
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), MP4_FPS, (width, height))
        if not writer.isOpened():
            raise EvaluationError(f"--video {path}: OpenCV cannot open an mp4v writer there")
        n = 0
        try:
            for rgb in frames:
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            writer.release()
        return n
    from PIL import Image

    images = [Image.fromarray(rgb) for k, rgb in enumerate(frames) if k % GIF_STRIDE == 0]
    if not images:
        raise EvaluationError(f"--video {path}: the best episode has no frames")
    images[0].save(path, save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
    return len(images)


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class Policy:
    """A checkpoint ready to play: its counters and config, E envs of its game, their
    :class:`~common.env_spec.EnvSpec` and the checkpoint's network (weights not yet set)."""

    checkpoint: str
    payload: dict
    cfg: Config
    env: VectorEnv
    spec: EnvSpec
    network: torch.nn.Module


def load_policy(checkpoint: str, num_envs: int, seed: int, video: bool) -> Policy:
    """Read ``checkpoint`` and its config, build ``num_envs`` envs of its game and the network
    it was trained with. CheckpointError if the checkpoint does not fit that game,
    EvaluationError for a video of a game without screens."""
    from common.envs import spec_of, vector_env_for
    from common.networks import q_network_for, signature_for, upgrade_signature
    from learner.checkpoint import CheckpointError, load_checkpoint, signature_mismatch

    payload = load_checkpoint(checkpoint)
    try:
        cfg = Config.from_dict(payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{checkpoint}: bad config inside: {e}") from None
    env_id = cfg.env.env_id
    # The run's protocol (sticky actions, action set); a checkpoint from before those were
    # settings has None and False: the family's defaults, what it was trained with.
    env = vector_env_for(cfg.env, num_envs, seed)
    try:
        spec = spec_of(env, env_id)
        if video and not spec.atari:
            kind = "a MinAtar grid of object channels" if env_id.startswith("MinAtar/") else "a flat-vector environment"
            raise EvaluationError(f"--video: {env_id} is {kind}, without an emulator screen; videos need an ALE game")
        sig = signature_for(spec, cfg.learner)
        if sig != upgrade_signature(payload["signature"]):
            raise CheckpointError(f"{checkpoint} {signature_mismatch(payload, sig)}")
        return Policy(checkpoint, payload, cfg, env, spec, q_network_for(spec, cfg.learner))
    except BaseException:
        env.close()
        raise


def policy_core(policy: Policy, epsilon: float, seed: int):
    """An :class:`~actors.actor.ActorCore` acting with the checkpoint's weights, eps
    ``epsilon``, one stream per env. It reports raw scores: evaluation never clips."""
    from actors.actor import ActorCore
    from learner.checkpoint import CheckpointError

    n = policy.env.num_envs
    core = ActorCore(
        policy.env,
        policy.network,
        lambda _: np.full(n, epsilon),
        list(range(n)),
        steps_per_batch=1,
        frames_per_step=policy.spec.frames_per_step,
        clip_rewards=False,
        seed=seed,
        record=False,
    )
    try:
        online = policy.payload["learner"]["online"]
        core.set_weights(online, policy.payload["counters"].get("policy_version", 0))
    except (KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{policy.checkpoint}: its weights do not fit this network ({first})") from None
    return core


def play(
    core, n: int, episodes: int, recorder: BestGameRecorder | None, label: str
) -> list[tuple[float, int, int | None]]:
    """Play ``core``'s ``n`` envs until ``episodes`` games are counted; (score, agent steps,
    emulator frames or None) per game, env by env. Env i plays a fixed quota of the games and
    its games beyond that are not counted, so short games are not over-represented."""
    quota = [episodes // n + (i < episodes % n) for i in range(n)]
    per_env: list[list] = [[] for _ in range(n)]
    counted = 0
    status = Status()
    while counted < episodes:
        status.update(f"evaluating {label}: {counted}/{episodes} games done, {core.agent_steps:,} agent steps")
        core.step()
        if recorder is not None:
            recorder.end_step()
        for ep in core.drain_episodes():
            i = ep.stream_id
            keep = len(per_env[i]) < quota[i]
            # Episode index in the result's order (env by env), for the video's caption.
            index = sum(quota[:i]) + len(per_env[i])
            frames = recorder.finished(i, ep.score, index, keep) if recorder is not None else None
            if keep:
                per_env[i].append((ep.score, ep.agent_steps, frames))
                counted += 1
    status.done()
    return [g for env_games in per_env for g in env_games]


def summarise(env_id: str, epsilon: float, games: list[tuple], checkpoint: str, counters: dict) -> dict:
    """The result dict of :func:`evaluate` (without ``video``) from the games :func:`play` counted."""
    from common.atari_scores import human_normalized, reference_scores

    s = np.array([g[0] for g in games], dtype=np.float64)
    ref = reference_scores(env_id)
    return {
        "env": env_id,
        "episodes": int(len(s)),
        "epsilon": epsilon,
        "mean": float(s.mean()),
        "median": float(np.median(s)),
        "min": float(s.min()),
        "max": float(s.max()),
        "scores": s.tolist(),
        "agent_steps": [int(g[1]) for g in games],
        "human_normalized_mean": human_normalized(env_id, float(s.mean())),
        "human_normalized_median": human_normalized(env_id, float(np.median(s))),
        "reference": {"random": ref[0], "human": ref[1]} if ref else None,
        "checkpoint": {
            "path": str(checkpoint),
            "policy_version": int(counters.get("policy_version", 0)),
            "env_frames": int(counters.get("env_frames", 0)),
        },
    }


def write_best_video(path: Path, recorder: BestGameRecorder) -> dict:
    """Write the recorder's best game to ``path``; the result's ``video`` entry."""
    best = recorder.best
    written = write_video(path, best.frames(recorder.shape), recorder.shape)
    gif = path.suffix.lower() == ".gif"
    return {
        "path": str(path),
        "format": "gif" if gif else "mp4",
        "fps": 1000.0 / GIF_FRAME_MS if gif else MP4_FPS,
        "frames_written": written,
        "emulator_frames": best.count,
        "episode": recorder.best_episode,
        "score": recorder.best_score,
        "width": int(recorder.shape[1]),
        "height": int(recorder.shape[0]),
    }


#: eps when neither --epsilon nor the checkpoint's config (``eval_epsilon``) says: Rainbow's and Dopamine's.
DEFAULT_EVAL_EPSILON = 0.001


def checkpoint_epsilon(cfg: Config) -> float:
    """The evaluation eps a run was configured with, DEFAULT_EVAL_EPSILON for older checkpoints."""
    eps = getattr(getattr(cfg, "eval", None), "eval_epsilon", None)
    return DEFAULT_EVAL_EPSILON if eps is None else float(eps)


def evaluate(
    checkpoint: str,
    episodes: int,
    epsilon: float | None = None,
    seed: int = 12345,
    num_envs: int | None = None,
    video: str | Path | None = None,
) -> dict:
    """Raw scores of ``episodes`` whole games played by the checkpoint's policy, at eps
    ``epsilon`` (None: the run's ``--eval-epsilon``, the evaluator's, see :func:`checkpoint_epsilon`).

    Returns a dict: env, episodes, epsilon, mean, median, min, max, scores (per episode,
    in order of env then game), agent_steps (per episode), human_normalized_mean and
    human_normalized_median (percent; None outside the Atari-57 table), reference
    (random, human or None) and, with ``video``, video (path, format, fps, frames written,
    the episode's emulator frames, its index and score, width, height).
    Raises CheckpointError, EvaluationError or common.envs.EnvSpecError on bad input.
    """
    if episodes < 1:
        raise EvaluationError(f"--episodes must be >= 1, got {episodes}")
    video_path = check_video_path(video) if video is not None else None
    policy = load_policy(checkpoint, min(num_envs or 8, episodes), seed, video=video_path is not None)
    recorder = None
    try:
        if video_path is not None:
            recorder = BestGameRecorder(policy.env.num_envs)
            policy.env.set_screen_hook(recorder)  # before the core's first reset
        if epsilon is None:
            epsilon = checkpoint_epsilon(policy.cfg)
        core = policy_core(policy, epsilon, seed)
        if recorder is not None:
            recorder.end_step()
        games = play(core, policy.env.num_envs, episodes, recorder, policy.spec.env_id)
        result = summarise(policy.spec.env_id, epsilon, games, checkpoint, policy.payload["counters"])
        if recorder is not None:
            result["video"] = write_best_video(video_path, recorder)
        return result
    finally:
        policy.env.close()
        if recorder is not None:
            recorder.close()


def format_report(result: dict) -> str:
    """The human-readable lines printed above the JSON line."""
    lines = [
        f"{result['env']}: {result['episodes']} episodes, epsilon {result['epsilon']:g}, "
        f"checkpoint {result['checkpoint']['path']} (policy version {result['checkpoint']['policy_version']:,}, "
        f"{result['checkpoint']['env_frames']:,} env frames)",
        f"raw score: mean {result['mean']:.2f}  median {result['median']:.2f}  min {result['min']:g}  max {result['max']:g}",
    ]
    if result["human_normalized_mean"] is not None:
        ref = result["reference"]
        lines.append(
            f"human-normalized: mean {result['human_normalized_mean']:.1f}%  median {result['human_normalized_median']:.1f}%"
            f"  (random {ref['random']:g}, human {ref['human']:g}; Badia et al. 2020)"
        )
    if "video" in result:
        v = result["video"]
        lines.append(
            f"video: {v['path']}: episode {v['episode']} (score {v['score']:g}), {v['emulator_frames']:,} emulator frames, "
            f"{v['frames_written']:,} written at {v['fps']:g} fps, {v['width']}x{v['height']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m learner.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="path to a checkpoint.pt")
    parser.add_argument("--episodes", type=int, default=10, help="whole games to play")
    parser.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="probability of a random action (default: the run's --eval-epsilon, the evaluator's during "
        "training: 0.001 as Rainbow/Dopamine with the apex preset, 0.05 with nature; 0.001 for older "
        "checkpoints). At 0, greedy play on a deterministic emulator (no sticky actions) can repeat "
        "itself until the --max-episode-frames cap (30 minutes of play a game)",
    )
    parser.add_argument("--seed", type=int, default=12345, help="environment and exploration seed")
    parser.add_argument(
        "--video",
        default=None,
        help="write the best episode to this .mp4 (60 fps, every emulator frame) or .gif (20 fps, every 3rd frame); ALE games only",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # the parser printed its one line (or --help)
        return int(e.code or 0)
    from common.envs import EnvSpecError
    from learner.checkpoint import CheckpointError

    for bad, flag, value, why in (
        (args.episodes < 1, "--episodes", args.episodes, "must be at least 1"),
        (args.epsilon is not None and not 0 <= args.epsilon <= 1, "--epsilon", args.epsilon, "must be in [0, 1]"),
        (
            not 0 <= args.seed < 2**31 - 8,
            "--seed",
            args.seed,
            "must be in 0..2^31-9 (ALE's seeds are signed 32-bit, env i plays seed + i)",
        ),
    ):
        if bad:
            print(f"error: {flag}={value}: {why}", file=sys.stderr)
            return USAGE_ERROR
    try:
        check_checkpoint_path(args.checkpoint)
        if args.video is not None:
            check_video_path(args.video)  # before the checkpoint is even read
        torch.set_num_threads(1)
        result = evaluate(args.checkpoint, args.episodes, args.epsilon, args.seed, video=args.video)
    except (CheckpointError, EvaluationError, EnvSpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    if not args.json:
        print(format_report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
