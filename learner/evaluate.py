"""Evaluate a checkpoint: ``python -m learner.evaluate --checkpoint RUN/checkpoint.pt --episodes 20``.

Plays the game the checkpoint was trained on, with the same preprocessing (no-op starts,
FIRE where the game needs it), eps-greedy with a small eps, and prints statistics of the
raw game score over whole games, the human-normalized score for the Atari-57 games (see
``common/atari_scores.py``) and, last, the same as one JSON line for scripts. The E envs
(at most 8) each play a fixed share of the episodes, so short games are not
over-represented the way the first N games to finish would be. ``--video best.mp4`` (or
``.gif``) records the best episode at the emulator's own size, 160x210 RGB, at the game's
own speed (ALE games only; ``learner.video.write_video`` says what each format holds).
The games are played and scored by ``learner.games``, the same code the evaluator runs
during training; this module reads the checkpoint and is the command.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.cli import USAGE_ERROR, OneLineParser
from common.config import ALE_SEED_MODULUS, Config, ConfigError
from learner.games import MAX_EVAL_ENVS, EvaluationError, eval_core, play, summarise
from learner.video import (  # noqa: F401  (re-exported: this module's names before learner.video)
    GIF_FRAME_MS,
    GIF_STRIDE,
    MP4_FPS,
    VIDEO_SUFFIXES,
    BestGameRecorder,
    check_video_path,
    write_best_video,
    write_video,
)

if TYPE_CHECKING:
    from actors.actor import ActorCore
    from common.env_spec import EnvSpec
    from common.envs import VectorEnv


def check_checkpoint_path(checkpoint: str) -> None:
    """EvaluationError naming --checkpoint unless it is a file (a run directory is taken as a mistake)."""
    path = Path(checkpoint)
    if path.is_dir():
        hint = f"; did you mean {path / 'checkpoint.pt'}?" if (path / "checkpoint.pt").is_file() else ""
        raise EvaluationError(f"--checkpoint {checkpoint}: is a directory, not a checkpoint file{hint}")
    if not path.exists():
        raise EvaluationError(f"--checkpoint {checkpoint}: no checkpoint there (no such file)")


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


def policy_core(policy: Policy, epsilon: float, seed: int) -> ActorCore:
    """The evaluation core (``learner.games.eval_core``) acting with the checkpoint's weights,
    eps ``epsilon``, one stream per env. CheckpointError if the weights do not fit."""
    from learner.checkpoint import CheckpointError

    core = eval_core(policy.env, policy.network, policy.spec, epsilon, seed)
    try:
        online = policy.payload["learner"]["online"]
        core.set_weights(online, policy.payload["counters"].get("policy_version", 0))
    except (KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{policy.checkpoint}: its weights do not fit this network ({first})") from None
    return core


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
    policy = load_policy(checkpoint, min(num_envs or MAX_EVAL_ENVS, episodes), seed, video=video_path is not None)
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
            not 0 <= args.seed < ALE_SEED_MODULUS - MAX_EVAL_ENVS,
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
