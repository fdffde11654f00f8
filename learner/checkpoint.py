"""Checkpoints: written atomically, loaded with ``weights_only`` and checked before use.

A checkpoint holds the learner's state (online and target networks, optimizer,
learner_steps), the run's counters, the network signature (frame shape, stack size,
actions) and the config. It is written to a temporary file in the same directory and
renamed over the old one, so a crash mid-write never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from common.networks import upgrade_signature

CHECKPOINT_NAME = "checkpoint.pt"
#: The weights of the run's best evaluation (online network only; for learner.evaluate, not --resume).
BEST_NAME = "best.pt"
CHECKPOINT_VERSION = 1
_REQUIRED = ("version", "learner", "counters", "signature", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here. The message names the file and the problem."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(path: str | Path, learner_state: dict, counters: dict, signature: dict, config: dict) -> None:
    path = Path(path)
    payload = {
        "version": CHECKPOINT_VERSION,
        "learner": learner_state,
        "counters": dict(counters),
        "signature": dict(signature),
        "config": config,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, signature: dict | None = None) -> dict:
    """The checkpoint's payload; CheckpointError if unreadable, malformed or mismatched.

    ``weights_only=True``: loading never runs code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        # torch's first sentence says what failed; the rest is advice about torch's own bugs
        first = (str(e).splitlines() or [""])[0].split(". ")[0][:160]
        raise CheckpointError(
            f"unreadable checkpoint {path} (cut short or corrupt?): {type(e).__name__}: {first}"
        ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        raise CheckpointError(
            f"{path} is not a raydqn checkpoint (missing {[k for k in _REQUIRED if not isinstance(payload, dict) or k not in payload]})"
        )
    wrong = [k for k in ("learner", "counters", "signature", "config") if not isinstance(payload[k], dict)]
    if wrong:
        raise CheckpointError(f"{path} is not a raydqn checkpoint ({', '.join(wrong)} not a dict)")
    if payload["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload['version']}, expected {CHECKPOINT_VERSION}")
    if signature is not None and upgrade_signature(payload["signature"]) != upgrade_signature(signature):
        raise CheckpointError(f"{path} {signature_mismatch(payload, signature)}")
    return payload


def signature_mismatch(payload: dict, signature: dict) -> str:
    """'was trained on <env> ...' naming only what differs, the checkpoint's value first."""
    theirs, ours = upgrade_signature(payload["signature"]), upgrade_signature(signature)
    diff = "; ".join(
        f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here"
        for k in sorted({*theirs, *ours})
        if theirs.get(k) != ours.get(k)
    )
    env = payload["config"].get("env")  # load_checkpoint checked that config is a dict
    env_id = env.get("env_id") if isinstance(env, dict) else None
    return f"was trained on {env_id or 'another network'}, which does not fit this run ({diff})"
