"""Hooks that let a video see every emulator frame of an ALE game, without changing how it steps.

``learner.evaluate`` records videos of whole games at the emulator's 60 frames a second,
not only the agent's every fourth, pooled, 84x84 frame. :meth:`AleVectorEnv.set_screen_hook`
installs a :class:`ScreenHook`; :func:`hook_ales` does it by wrapping each ``ALEInterface``
in a thin proxy that reports resets and frames and passes everything else through, so the
env's stepping code is the same with a hook or without, and a run without videos pays
nothing. Kept apart from the env so that the stepping code reads without the video's needs.
"""

from __future__ import annotations

import numpy as np


class ScreenHook:
    """What :meth:`AleVectorEnv.set_screen_hook` calls (override both)."""

    def new_game(self, env_index: int) -> None:
        """Env ``env_index`` starts a new game; its frames from now on belong to it."""

    def frame(self, env_index: int, rgb: np.ndarray) -> None:
        """One emulator frame of env ``env_index``: ``uint8[210, 160, 3]``, valid during the call."""


class _ScreenHookALE:
    """An ALEInterface that reports resets and frames to a ScreenHook; the rest passes through."""

    __slots__ = ("ale", "index", "hook")

    def __init__(self, ale, index: int, hook: ScreenHook):
        self.ale, self.index, self.hook = ale, index, hook

    def act(self, action, *args):
        reward = self.ale.act(action, *args)
        self.hook.frame(self.index, self.ale.getScreenRGB())
        return reward

    def reset_game(self) -> None:
        self.hook.new_game(self.index)
        self.ale.reset_game()

    def __getattr__(self, name):
        return getattr(self.ale, name)


def hook_ales(ales: list, hook: ScreenHook | None) -> list:
    """``ales`` (bare or already hooked ALEInterfaces) reporting to ``hook``, env i as index i;
    with ``hook`` None, the bare ALEInterfaces again."""
    bare = [a.ale if isinstance(a, _ScreenHookALE) else a for a in ales]
    return bare if hook is None else [_ScreenHookALE(a, i, hook) for i, a in enumerate(bare)]
