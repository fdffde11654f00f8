"""Argument handling shared by the benchmark programs.

A benchmark runs for minutes before its first figure, so everything it is given is checked
at once, before any phase starts or any directory is made: a flag of the wrong type or out
of range, an env the system cannot serve, an output path that is a file, and the settings
it will hand to ``learner.main``. Bad input is one ``error: ...`` line naming the flag and
the value, and exit code 2 (``common.cli.OneLineParser``).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from common.cli import OneLineParser
from common.config import MAX_SEED


def parser(description: str, **kwargs) -> OneLineParser:
    kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
    return OneLineParser(description=description, allow_abbrev=False, **kwargs)


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def at_least(kind, low, *, above: bool = False, high=None):
    """An argparse ``type``: ``kind`` (int or float), finite, >= low (> low with ``above``), <= high."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low or (above and value == low) or (high is not None and value > high):
            bounds = f"{'>' if above else '>='} {_num(low)}" + (f" and <= {_num(high)}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = at_least(int, 1)
SEED = at_least(int, 0, high=MAX_SEED)  # learner.main's own limit
SECONDS = at_least(float, 0.0, above=True)
SECONDS_OR_ZERO = at_least(float, 0.0)
NICENESS = at_least(int, -20, high=19)


def check_env(p: argparse.ArgumentParser, flag: str, env_id: str) -> None:
    """``p.error`` unless the system can serve ``env_id`` (an installed ALE game, or a flat
    Box, Discrete-action gymnasium env)."""
    from common.envs import EnvSpecError, check_env_id

    try:
        check_env_id(env_id)
    except EnvSpecError as e:
        p.error(f"{flag} {env_id}: {e}")


def check_out_dir(p: argparse.ArgumentParser, flag: str, path: str | None) -> None:
    """``p.error`` unless ``path`` is a directory, or one that can be made (nothing is made here)."""
    if path is None:
        return
    d = Path(path)
    if d.exists() and not d.is_dir():
        p.error(f"{flag} {path}: is a file, not a directory")
    existing = d
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        p.error(f"{flag} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        p.error(f"{flag} {path}: {existing} is not writable")


def check_out_file(p: argparse.ArgumentParser, flag: str, path: str) -> None:
    """``p.error`` unless ``path`` names a file that can be written where it says: not a
    directory, in an existing, writable directory (checked before any work, so a long run
    never ends unable to write its result)."""
    f = Path(path)
    if f.is_dir():
        p.error(f"{flag} {path}: is a directory, not a file")
    parent = f.parent
    if not parent.exists():
        p.error(f"{flag} {path}: directory '{parent}' does not exist")
    if not parent.is_dir():
        p.error(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        p.error(f"{flag} {path}: directory '{parent}' is not writable")


def _concrete(parse):
    """``parse``, refusing "auto": a benchmark hands learner.main a value it has chosen."""

    def concrete(text: str):
        value = parse(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"this benchmark needs a value, got {text!r}")
        return value

    concrete.__name__ = getattr(parse, "__name__", "value")
    return concrete


def add_learner_flags(p: argparse.ArgumentParser, defaults: dict, notes: dict | None = None) -> None:
    """Adds learner.main's own flags (``{"--batch-size": 32, ...}``: the flag and this
    benchmark's default) with learner.main's type, choices and help: nothing of the
    learner's is declared twice, and :func:`check_learner_flags` then checks the values with
    the learner's own Config, so a bad one gets learner.main's one-line error. ``notes``:
    what a flag also means in this benchmark, before learner.main's help."""
    from common.config import build_arg_parser

    learner = {a.option_strings[0]: a for a in build_arg_parser()._actions if a.option_strings}
    for flag, default in defaults.items():
        action = learner[flag]
        meaning = action.help
        if " (auto:" in meaning and meaning.endswith(")"):  # a benchmark gives a value: what auto picks is moot
            meaning = meaning[: meaning.rfind(" (auto:")]
        p.add_argument(
            flag,
            type=_concrete(action.type) if action.type else None,
            choices=action.choices,
            default=default,
            metavar=action.metavar,
            help=(f"{notes[flag]}; " if flag in (notes or {}) else "") + f"learner.main's {flag}: {meaning}",
        )


def check_learner_flags(p: argparse.ArgumentParser, argv: list, context: bool = True) -> None:
    """``p.error`` if ``learner.main`` would refuse these flags (each value alone, and
    together: a batch larger than the replay, a device torch does not have), with
    learner.main's own one-line error; ``context``: followed by every setting given (for
    settings the benchmark chose rather than the user)."""
    from common.config import ConfigError, build_arg_parser, config_from_args

    flags = [str(a) for a in argv]
    try:
        cfg = config_from_args(build_arg_parser(parser_class=OneLineParser).parse_args(flags))
    except ConfigError as e:
        p.error(f"{e} (among the settings this benchmark gives learner.main: {' '.join(flags)})" if context else str(e))
    if cfg.learner.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device {cfg.learner.device}: no CUDA device is available to torch")
