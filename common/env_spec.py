"""What the rest of the system needs to know about an environment, in one frozen value.

An :class:`EnvSpec` is read once from a probe env (``common.envs.describe_env``) at the
top of each entry point and handed down as plain values: the replay needs the stack size,
the actors the frame skip and reward clipping, the network the frame shape and action
count. Nothing below the entry points asks "is this
Atari?" again.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One environment family's facts. Frames are ``frame_dtype[*frame_shape]``; the actor
    stacks ``stack_size`` of them; each agent step is ``frames_per_step`` emulator frames."""

    env_id: str
    frame_shape: tuple[int, ...]
    frame_dtype: str  # "uint8" for images, "float32" for flat vectors
    stack_size: int
    num_actions: int
    frames_per_step: int  # emulator frames per agent step: the frame skip (4 on Atari)
    codec: str  # how StepBatch frames travel: "lz4" for images, "raw" for vectors
    clip_rewards: bool  # the learner sees sign(reward); raw scores are still reported
    atari: bool

    def __post_init__(self):
        object.__setattr__(self, "frame_shape", tuple(int(d) for d in self.frame_shape))
        if self.stack_size < 1 or self.num_actions < 1 or self.frames_per_step < 1:
            raise ValueError(f"bad env spec for {self.env_id!r}: {self}")
