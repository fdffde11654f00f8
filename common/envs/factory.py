"""Building envs from an id or from a run's settings: the one door the rest of the system uses.

:func:`make_vector_env` picks the family of an id (:mod:`common.envs.ids`) and builds E
envs of it with the protocol's defaults (:mod:`common.envs.protocol`); :func:`vector_env_for`
does the same from a run's ``EnvConfig``, so the actors, the evaluator and
``learner.evaluate`` play under the same settings; :func:`check_env_id` refuses an id we
cannot run with one line; :func:`describe_env` and :func:`spec_of` read the
:class:`~common.env_spec.EnvSpec` that the entry points hand down instead of the env.
"""

from __future__ import annotations

import numpy as np

from common.env_spec import EnvSpec
from common.envs.ale import AleVectorEnv
from common.envs.base import VectorEnv
from common.envs.flat import GymVectorEnv, make_flat_env
from common.envs.ids import atari_rom, is_atari, is_minatar, minatar_game
from common.envs.minatar import MINATAR_REPEAT_ACTION_PROBABILITY, MinAtarVectorEnv
from common.envs.protocol import ATARI_MAX_EPISODE_FRAMES, ATARI_NOOP_MAX, ATARI_REPEAT_ACTION_PROBABILITY


def check_env_id(env_id: str) -> None:
    """Raise EnvSpecError unless ``env_id`` is an installed ALE game, a MinAtar game with
    the extra installed, or a registered gymnasium env with a flat Box observation and
    Discrete actions (that one is built once to see its spaces)."""
    if is_minatar(env_id):
        minatar_game(env_id)
    elif is_atari(env_id):
        atari_rom(env_id)
    else:
        make_flat_env(env_id).close()


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int,
    *,
    episodic_life: bool | None = None,
    noop_max: int = ATARI_NOOP_MAX,
    max_episode_frames: int = ATARI_MAX_EPISODE_FRAMES,
    repeat_action_probability: float | None = None,
    full_action_space: bool = False,
) -> VectorEnv:
    """``num_envs`` copies of ``env_id``, env i seeded with ``seed + i``.

    Atari options (see :mod:`common.envs.ale`): ``episodic_life`` None means on for games
    with lives; ``noop_max`` no-op frames at most after each reset; ``max_episode_frames``
    emulator frames per episode before truncation; ``repeat_action_probability`` sticky
    actions (None: the family's protocol, 0 for ALE games, 0.1 for MinAtar);
    ``full_action_space`` every action of the console (18) or of MinAtar (6) instead of the
    game's minimal set. Flat-vector envs ignore them.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if is_minatar(env_id):
        game, all_actions = minatar_game(env_id)
        return MinAtarVectorEnv(
            game,
            num_envs,
            seed,
            max_episode_frames=max_episode_frames,
            repeat_action_probability=MINATAR_REPEAT_ACTION_PROBABILITY
            if repeat_action_probability is None
            else repeat_action_probability,
            full_action_space=full_action_space or all_actions,
        )
    if is_atari(env_id):
        return AleVectorEnv(
            atari_rom(env_id),
            num_envs,
            seed,
            episodic_life=episodic_life,
            noop_max=noop_max,
            max_episode_frames=max_episode_frames,
            repeat_action_probability=ATARI_REPEAT_ACTION_PROBABILITY
            if repeat_action_probability is None
            else repeat_action_probability,
            full_action_space=full_action_space,
        )
    return GymVectorEnv(env_id, num_envs, seed)


def vector_env_for(env_cfg, num_envs: int, seed: int) -> VectorEnv:
    """``num_envs`` envs under a run's env settings (a ``common.config.EnvConfig``): the one
    place the actors, the evaluator and ``learner.evaluate`` build envs from the config, so
    the protocol (no-ops, frame cap, sticky actions, action set) is the same for all three."""
    return make_vector_env(
        env_cfg.env_id,
        num_envs,
        seed,
        episodic_life=env_cfg.episodic_life,
        noop_max=env_cfg.noop_max,
        max_episode_frames=env_cfg.max_episode_frames,
        repeat_action_probability=env_cfg.repeat_action_probability,
        full_action_space=env_cfg.full_action_space,
    )


def spec_of(env: VectorEnv, env_id: str) -> EnvSpec:
    """The :class:`EnvSpec` of a built vector env."""
    return EnvSpec(
        env_id=env_id,
        frame_shape=tuple(env.frame_shape),
        frame_dtype=np.dtype(env.frame_dtype).name,
        stack_size=env.stack_size,
        num_actions=env.num_actions,
        frames_per_step=env.frames_per_step,
        codec=env.codec,
        clip_rewards=env.clip_rewards,
        atari=env.atari,
    )


def describe_env(env_id: str, full_action_space: bool = False) -> EnvSpec:
    """Build one copy of ``env_id`` to read its :class:`EnvSpec`; EnvSpecError if we cannot run
    it. ``full_action_space`` changes ``num_actions`` (18 on every ALE game)."""
    check_env_id(env_id)
    with make_vector_env(env_id, 1, 0, full_action_space=full_action_space) as probe:
        return spec_of(probe, env_id)
