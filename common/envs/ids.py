"""Environment ids: which family an id belongs to, and what it names (a ROM, a MinAtar game).

The system is told an id on the command line (``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4``,
``MinAtar/Breakout-v1``, ``CartPole-v1``) and must decide once which env family plays it and
whether that is possible here (the ROM installed, the MinAtar extra present). Those answers
live here, apart from the envs themselves, so that a cheap question ("is this Atari?") does
not build an emulator and an unrunnable id is refused with one line (:class:`EnvSpecError`)
naming the id and the problem. gymnasium and ale_py are imported only when asked.
"""

from __future__ import annotations

import importlib.util
import re
import warnings

from common.envs.base import EnvSpecError

ATARI_PREFIX = "ALE/"
MINATAR_PREFIX = "MinAtar/"
#: MinAtar's games: the id's name -> the module in ``minatar.environments``.
MINATAR_GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
MINATAR_INSTALL_HINT = 'pip install -e ".[minatar]" (MinAtar, GPL-3.0)'


def gym_with_ale():
    """gymnasium with the ALE ids registered (importing ale_py registers them)."""
    import ale_py  # noqa: F401
    import gymnasium

    return gymnasium


def registered_spec(env_id: str):
    """gymnasium's registered spec of ``env_id``, or None for an id nobody registered."""
    gym = gym_with_ale()
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        return None


def is_minatar(env_id: str) -> bool:
    """True for ``MinAtar/<Game>-v0|v1`` ids (any name after the prefix, even unknown games)."""
    return env_id.startswith(MINATAR_PREFIX)


def is_atari(env_id: str) -> bool:
    """True for ALE ids: ``ALE/<Game>-v5`` (any, even unknown games) and the registered
    ``<Game>[NoFrameskip]-v0/v4`` ids whose entry point is ale_py's AtariEnv. MinAtar ids
    are not Atari: no emulator, 10x10 frames."""
    if env_id.startswith(ATARI_PREFIX):
        return True
    if is_minatar(env_id):
        return False
    spec = registered_spec(env_id)
    return spec is not None and "ale_py" in str(spec.entry_point)


def atari_rom(env_id: str) -> str:
    """The ROM path of an ALE id; EnvSpecError if it is not one we can run."""
    import ale_py

    spec = registered_spec(env_id)
    if spec is None:
        raise EnvSpecError(f"unknown environment {env_id!r}: not an ALE game or a registered gymnasium id")
    game = spec.kwargs.get("game")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rom = ale_py.roms.get_rom_path(game) if game else None
    if rom is None:
        raise EnvSpecError(f"environment {env_id!r}: no ROM installed for game {game!r}")
    return str(rom)


def minatar_game(env_id: str) -> tuple[str, bool]:
    """The ``minatar.environments`` module name of a MinAtar id and whether the id asks for
    all 6 actions (``-v0``; ``-v1`` is the minimal set). EnvSpecError for an unknown game or
    version, or if the ``minatar`` extra is not installed."""
    m = re.fullmatch(re.escape(MINATAR_PREFIX) + r"(\w+)-v([01])", env_id)
    if m is None or m.group(1) not in MINATAR_GAMES:
        raise EnvSpecError(
            f"unknown environment {env_id!r}: MinAtar ids are MinAtar/<Game>-v0 or -v1 "
            f"with <Game> one of {', '.join(MINATAR_GAMES)}"
        )
    if importlib.util.find_spec("minatar") is None:
        raise EnvSpecError(f"environment {env_id!r} needs the MinAtar extra: {MINATAR_INSTALL_HINT}")
    return MINATAR_GAMES[m.group(1)], m.group(2) == "0"
