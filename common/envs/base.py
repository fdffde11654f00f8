"""The interface every env family implements: E envs stepped together, one :class:`EnvStep` per step.

The actors, the evaluator and ``learner.evaluate`` only ever see a :class:`VectorEnv`, so an
ALE game, a MinAtar game and a flat-vector gymnasium env go through the same acting loop.
The env never stacks frames (the actor keeps its own stacks, so what it acts on is exactly
what the replay rebuilds) and never clips rewards (the actor clips for learning and reports
raw scores). :class:`EnvSpecError` is the one error for an environment id we cannot run.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np


class EnvSpecError(ValueError):
    """An environment id we cannot run; the one-line text names the id and the problem."""


@dataclasses.dataclass
class EnvStep:
    """What one :meth:`VectorEnv.step` returns for its E envs.

    ``terminated`` and ``truncated`` are never both True. An env with either flag has
    started a new segment: ``restart_frames`` holds its first observation (the new game's
    first frame after a real reset; after a life loss with the game going on, the frame the
    game continues from). For the other envs ``restart_frames`` equals ``frames``, so
    ``restart_frames`` is always what each env continues from.
    """

    frames: np.ndarray  # frame_dtype[E, *frame_shape]; the final frame where a segment ended
    rewards: np.ndarray  # float32[E], raw game reward (not clipped)
    terminated: np.ndarray  # bool[E], terminal for learning: game over, or a life loss with episodic life
    truncated: np.ndarray  # bool[E], time limit reached (and not terminated)
    game_over: np.ndarray  # bool[E], the real episode (the game, all lives) ended: report the score
    restart_frames: np.ndarray  # frame_dtype[E, *frame_shape], see the class docstring


class VectorEnv(abc.ABC):
    """E environments stepped together with one action each."""

    num_envs: int
    num_actions: int
    frame_shape: tuple[int, ...]
    frame_dtype: np.dtype
    stack_size: int  # frames the actor stacks: 4 for Atari, 1 for flat vectors
    codec: str  # frame codec for StepBatch: "lz4" for uint8 images, "raw" for float32 vectors
    frames_per_step: int  # emulator frames per agent step (the frame skip)
    clip_rewards: bool  # whether the learner should see sign(reward)
    atari: bool

    @abc.abstractmethod
    def reset(self) -> np.ndarray:
        """Reset every env; returns the first observations ``frame_dtype[E, *frame_shape]``."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> EnvStep:
        """One agent step of every env with ``actions`` int[E] in ``[0, num_actions)``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the emulators."""

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be int[{self.num_envs}], got {actions.dtype}{list(actions.shape)}")
        if len(actions) and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions.min()}..{actions.max()}")
        return actions
