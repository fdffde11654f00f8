"""Environments the actors step: one small vector interface over ALE games and flat-vector
gymnasium envs.

:func:`make_vector_env` returns a :class:`VectorEnv`; each :meth:`VectorEnv.step` gives an
:class:`EnvStep` for all E envs at once. The env never stacks frames (the actor keeps its
own stacks, so what it acts on is exactly what the replay rebuilds) and never clips
rewards (the actor clips for learning and reports raw scores).

Atari (:class:`AleVectorEnv`) follows the DeepMind preprocessing: 1..``noop_max`` no-op
frames after each reset, FIRE pressed by the env after a reset and after a life loss in
games that need it (FIRE is action 1 and the game has >= 3 actions, as in baselines'
``FireResetEnv``), each action repeated for 4 frames with the max of the last two frames
taken, 84x84 grayscale (``cv2.INTER_AREA``, as gymnasium's ``AtariPreprocessing``),
no sticky actions (``repeat_action_probability`` 0) and the game's minimal action set by
default (``full_action_space`` gives all 18), truncation after
``max_episode_frames`` emulator frames of an episode (counted from the reset, no-ops
included). With ``episodic_life`` a life loss is terminal for learning while the game
goes on (score accumulating across lives); the default turns it on for games with lives.

:class:`AleVectorEnv` drives ``ALEInterface`` directly rather than ale-py's own
``AtariVectorEnv``, which misses FIRE after a life loss, garbles final frames and is no
faster per core (measured: ``docs/design-notes.md``). A test checks its frames against
gymnasium's ``AtariPreprocessing`` step by step.

MinAtar (:class:`MinAtarVectorEnv`, ``MinAtar/Breakout-v1`` and the other four games; Young
& Tian 2019, the optional ``minatar`` extra, GPL-3.0) plays the game modules of the
``minatar`` package directly: frames are the game's 10x10xC boolean state as
``uint8[C, 10, 10]``, one frame per agent step and no stacking (the paper's agents see one
state), raw rewards (the paper does not clip), sticky actions (the paper's 0.1 unless
``repeat_action_probability`` says otherwise); ``-v1`` ids use the game's minimal action
set, ``-v0`` ids and ``full_action_space`` all 6 actions. ``max_episode_frames`` truncates
(MinAtar has no time limit of its own but Freeway's); ``noop_max`` and ``episodic_life`` do
not apply.

Flat-vector gymnasium envs (:class:`GymVectorEnv`, e.g. ``CartPole-v1``) are a list of
``gymnasium.make`` envs stepped in a loop and reset by hand; their own ``TimeLimit``
truncates; ``episodic_life``, ``noop_max``, ``max_episode_frames``,
``repeat_action_probability`` and ``full_action_space`` do not apply to them.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import re
import warnings

import cv2
import numpy as np

from common.env_spec import EnvSpec

ATARI_PREFIX = "ALE/"
ATARI_FRAME_SHAPE = (84, 84)
ATARI_FRAME_SKIP = 4
ATARI_STACK_SIZE = 4
FIRE_ACTION_INDEX = 1
#: No sticky actions on ALE games: the Nature DQN / Ape-X protocol (Machado et al. 2018 recommend 0.25).
ATARI_REPEAT_ACTION_PROBABILITY = 0.0

MINATAR_PREFIX = "MinAtar/"
#: MinAtar's games: the id's name -> the module in ``minatar.environments``.
MINATAR_GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
MINATAR_FRAME_SIDE = 10
#: MinAtar's own default and the paper's setting (Young & Tian 2019).
MINATAR_REPEAT_ACTION_PROBABILITY = 0.1
MINATAR_INSTALL_HINT = 'pip install -e ".[minatar]" (MinAtar, GPL-3.0)'


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


# --------------------------------------------------------------------------- ids


def _gym():
    """gymnasium with the ALE ids registered (importing ale_py registers them)."""
    import ale_py  # noqa: F401
    import gymnasium

    return gymnasium


def _registered_spec(env_id: str):
    gym = _gym()
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
    spec = _registered_spec(env_id)
    return spec is not None and "ale_py" in str(spec.entry_point)


def _atari_rom(env_id: str) -> str:
    """The ROM path of an ALE id; EnvSpecError if it is not one we can run."""
    import ale_py

    spec = _registered_spec(env_id)
    if spec is None:
        raise EnvSpecError(f"unknown environment {env_id!r}: not an ALE game or a registered gymnasium id")
    game = spec.kwargs.get("game")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rom = ale_py.roms.get_rom_path(game) if game else None
    if rom is None:
        raise EnvSpecError(f"environment {env_id!r}: no ROM installed for game {game!r}")
    return str(rom)


def _check_flat_env(env_id: str, env) -> None:
    from gymnasium.spaces import Box, Discrete

    obs, act = env.observation_space, env.action_space
    if not (isinstance(obs, Box) and len(obs.shape) == 1):
        raise EnvSpecError(f"environment {env_id!r} has observation space {obs}; only flat Box vectors are supported")
    if not isinstance(act, Discrete):
        raise EnvSpecError(f"environment {env_id!r} has action space {act}; only Discrete actions are supported")


def _make_flat_env(env_id: str):
    gym = _gym()
    if _registered_spec(env_id) is None:
        raise EnvSpecError(f"unknown environment {env_id!r}: not an ALE game or a registered gymnasium id")
    try:
        env = gym.make(env_id)
    except Exception as e:  # missing extra dependencies (box2d, mujoco), bad kwargs
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EnvSpecError(f"environment {env_id!r} cannot be created: {first_line}") from None
    try:
        _check_flat_env(env_id, env)
    except EnvSpecError:
        env.close()
        raise
    return env


def _minatar_game(env_id: str) -> tuple[str, bool]:
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


def check_env_id(env_id: str) -> None:
    """Raise EnvSpecError unless ``env_id`` is an installed ALE game, a MinAtar game with
    the extra installed, or a registered gymnasium env with a flat Box observation and
    Discrete actions (that one is built once to see its spaces)."""
    if is_minatar(env_id):
        _minatar_game(env_id)
    elif is_atari(env_id):
        _atari_rom(env_id)
    else:
        _make_flat_env(env_id).close()


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int,
    *,
    episodic_life: bool | None = None,
    noop_max: int = 30,
    max_episode_frames: int = 108_000,
    repeat_action_probability: float | None = None,
    full_action_space: bool = False,
) -> VectorEnv:
    """``num_envs`` copies of ``env_id``, env i seeded with ``seed + i``.

    Atari options (see the module docstring): ``episodic_life`` None means on for games
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
        game, all_actions = _minatar_game(env_id)
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
            _atari_rom(env_id),
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


def default_repeat_action_probability(env_id: str) -> float:
    """The sticky-action probability of the env family's protocol: MinAtar's paper 0.1,
    Nature DQN / Ape-X's 0 for ALE games (flat-vector envs have none)."""
    return MINATAR_REPEAT_ACTION_PROBABILITY if is_minatar(env_id) else ATARI_REPEAT_ACTION_PROBABILITY


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


def describe_env(env_id: str, full_action_space: bool = False) -> EnvSpec:
    """Build one copy of ``env_id`` to read its :class:`EnvSpec`; EnvSpecError if we cannot run
    it. ``full_action_space`` changes ``num_actions`` (18 on every ALE game)."""
    check_env_id(env_id)
    with make_vector_env(env_id, 1, 0, full_action_space=full_action_space) as probe:
        return spec_of(probe, env_id)


# --------------------------------------------------------------------------- Atari


class AleVectorEnv(VectorEnv):
    """E ALE emulators with DeepMind preprocessing, stepped one after the other.

    Frames ``uint8[84, 84]``. A step's frame is the max of the last two of its 4 frames;
    a step cut short by the game ending gives the last screen. Frames that follow no agent
    step (after the reset's no-ops and FIRE, after the FIRE that follows a life loss) are
    that single screen.

    FIRE after a life loss is one emulator frame pressed inside the step that lost the
    life, after its final frame was taken: the agent never sees it. Its frame is what the
    game continues from (``restart_frames`` if the life loss is terminal, else ``frames``).
    Rewards earned in frames the agent does not see (the reset's no-ops and FIRE, the FIRE
    after a life loss) are added to the env's next step, the first of the segment they
    belong to, so raw scores miss nothing and no reward crosses a terminal. (They are 0 in
    practice.)
    """

    frame_shape = ATARI_FRAME_SHAPE
    frame_dtype = np.dtype(np.uint8)
    stack_size = ATARI_STACK_SIZE
    codec = "lz4"
    frames_per_step = ATARI_FRAME_SKIP
    clip_rewards = True
    atari = True

    def __init__(
        self,
        rom_path: str,
        num_envs: int,
        seed: int,
        *,
        episodic_life: bool | None = None,
        noop_max: int = 30,
        max_episode_frames: int = 108_000,
        repeat_action_probability: float = 0.0,
        full_action_space: bool = False,
    ):
        import ale_py

        if noop_max < 0:
            raise ValueError(f"noop_max must be >= 0, got {noop_max}")
        if max_episode_frames < 1:
            raise ValueError(f"max_episode_frames must be >= 1, got {max_episode_frames}")
        if not 0.0 <= repeat_action_probability <= 1.0:
            raise ValueError(f"repeat_action_probability must lie in [0, 1], got {repeat_action_probability}")
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self._noop = ale_py.Action.NOOP
        self._fire_action = ale_py.Action.FIRE
        self.num_envs = num_envs
        self.noop_max = noop_max
        self.max_episode_frames = max_episode_frames
        self._ales = []
        for i in range(num_envs):
            ale = ale_py.ALEInterface()
            ale.setInt("random_seed", (seed + i) % (2**31))
            ale.setFloat("repeat_action_probability", float(repeat_action_probability))
            ale.loadROM(rom_path)
            self._ales.append(ale)
        minimal = list(self._ales[0].getMinimalActionSet())
        # The full set is all 18 in the console's order (NOOP, FIRE, UP, ...), for every game.
        self._action_set = list(self._ales[0].getLegalActionSet()) if full_action_space else minimal
        self.num_actions = len(self._action_set)
        #: Whether the env presses FIRE after resets and life losses (baselines' rule, on the
        #: game's minimal set: with the full set every game has FIRE at index 1).
        self.fire_on_start = len(minimal) >= 3 and minimal[FIRE_ACTION_INDEX] == ale_py.Action.FIRE
        #: Whether a life loss is terminal for learning.
        self.episodic_life = self._ales[0].lives() > 0 if episodic_life is None else bool(episodic_life)
        self._noop_rngs = [np.random.default_rng(seed + i) for i in range(num_envs)]
        height, width = self._ales[0].getScreenDims()
        self._screens = np.zeros((num_envs, 2, height, width), np.uint8)
        self._lives = np.zeros(num_envs, np.int64)
        self._pending = np.zeros(num_envs, np.float64)  # rewards of unseen frames, for the next step
        self._started = False

    def lives(self) -> np.ndarray:
        """int64[E]: lives left in each env's game (0 for games without lives)."""
        return self._lives.copy()

    def episode_frames(self) -> np.ndarray:
        """int64[E]: emulator frames since each env's last reset."""
        return np.array([ale.getEpisodeFrameNumber() for ale in self._ales], np.int64)

    def _resize(self, screen: np.ndarray) -> np.ndarray:
        return cv2.resize(screen, (ATARI_FRAME_SHAPE[1], ATARI_FRAME_SHAPE[0]), interpolation=cv2.INTER_AREA)

    def _screen(self, i: int) -> np.ndarray:
        """The current screen of env i, preprocessed, without pooling."""
        buf = self._screens[i, 0]
        self._ales[i].getScreenGrayscale(buf)
        return self._resize(buf)

    def _reset_one(self, i: int) -> np.ndarray:
        """Real reset of env i: new game, no-ops, FIRE; returns its first frame."""
        ale = self._ales[i]
        ale.reset_game()
        reward = 0.0
        noops = int(self._noop_rngs[i].integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        unseen = [self._noop] * noops + ([self._fire_action] if self.fire_on_start else [])
        for action in unseen:
            reward += ale.act(action)
            if ale.game_over(with_truncation=False):
                ale.reset_game()
                reward = 0.0
        self._pending[i] = reward
        self._lives[i] = ale.lives()
        return self._screen(i)

    def reset(self) -> np.ndarray:
        frames = np.stack([self._reset_one(i) for i in range(self.num_envs)])
        self._started = True
        return frames

    def _out_of_time(self, ale) -> bool:
        return ale.getEpisodeFrameNumber() >= self.max_episode_frames

    def step(self, actions: np.ndarray) -> EnvStep:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        n = self.num_envs
        frames = np.empty((n, *ATARI_FRAME_SHAPE), np.uint8)
        restart = np.empty_like(frames)
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        game_over = np.zeros(n, bool)
        for i in range(n):
            ale, screens = self._ales[i], self._screens[i]
            action = self._action_set[actions[i]]
            reward = self._pending[i]
            self._pending[i] = 0.0
            for k in range(ATARI_FRAME_SKIP):
                reward += ale.act(action)
                if k >= ATARI_FRAME_SKIP - 2:
                    ale.getScreenGrayscale(screens[k - (ATARI_FRAME_SKIP - 2)])
                if ale.game_over(with_truncation=False) or self._out_of_time(ale):
                    if k < ATARI_FRAME_SKIP - 1:  # cut short: the final frame is the last screen
                        ale.getScreenGrayscale(screens[1])
                        screens[0] = screens[1]
                    break
            np.maximum(screens[0], screens[1], out=screens[0])
            frames[i] = self._resize(screens[0])
            continuation = frames[i]
            lives = ale.lives()
            life_lost = lives < self._lives[i]
            self._lives[i] = lives
            if (
                life_lost
                and self.fire_on_start
                and not (ale.game_over(with_truncation=False) or self._out_of_time(ale))
            ):
                fire_reward = ale.act(self._fire_action)
                if ale.game_over(with_truncation=False) or self._out_of_time(ale):
                    reward += fire_reward  # the game ended in that frame: nothing follows it
                else:
                    self._pending[i] = fire_reward
                    continuation = self._screen(i)
            ended = ale.game_over(with_truncation=False)
            out_of_time = self._out_of_time(ale)
            rewards[i] = reward
            terminated[i] = ended or (life_lost and self.episodic_life)
            truncated[i] = out_of_time and not terminated[i]
            game_over[i] = ended or out_of_time
            if game_over[i]:
                restart[i] = self._reset_one(i)
            elif terminated[i]:
                restart[i] = continuation
            else:
                frames[i] = continuation
                restart[i] = continuation
        return EnvStep(frames, rewards, terminated, truncated, game_over, restart)

    def close(self) -> None:
        self._ales = []
        self._started = False

    # ---- screens for videos (optional; the stepping code above is the same without them)

    def screens(self) -> np.ndarray:
        """uint8[E, 210, 160, 3]: each emulator's current screen in RGB, not preprocessed."""
        return np.stack([ale.getScreenRGB() for ale in self._ales])

    def set_screen_hook(self, hook: "ScreenHook | None") -> None:
        """Show ``hook`` every emulator frame of every env (for videos); None turns it off.

        ``hook.new_game(i)`` is called when env i's game is reset (before its no-ops; on
        ``reset()`` and when a game ends inside ``step``), then ``hook.frame(i, rgb)``
        after each emulator frame of env i, with ``rgb`` its screen ``uint8[210, 160, 3]``:
        the no-ops, the FIRE presses, the frames of each agent step (fewer than 4 where
        the game ends). So the frames between two ``new_game(i)`` are exactly the frames
        of one game, as many as its ALE episode frame number. Done by wrapping each
        ALEInterface, so the env steps the same way, hook or not.
        """
        bare = [a.ale if isinstance(a, _ScreenHookALE) else a for a in self._ales]
        self._ales = bare if hook is None else [_ScreenHookALE(a, i, hook) for i, a in enumerate(bare)]


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


# --------------------------------------------------------------------------- MinAtar


def _minatar_env_class(game: str):
    """The ``Env`` class of ``minatar.environments.<game>``, loaded from its file so that the
    ``minatar`` package's own init, which imports matplotlib and seaborn for its display
    (≈ 1.5 s of CPU in every actor process), never runs. The game modules need only numpy."""
    import sys
    from pathlib import Path

    name = f"_raydqn_minatar_{game}"
    if name not in sys.modules:
        package = importlib.util.find_spec("minatar")
        if package is None:
            raise EnvSpecError(f"MinAtar is not installed: {MINATAR_INSTALL_HINT}")
        path = Path(list(package.submodule_search_locations)[0]) / "environments" / f"{game}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].Env


class MinAtarVectorEnv(VectorEnv):
    """E MinAtar games (Young & Tian 2019), stepped one after the other.

    Frames ``uint8[C, 10, 10]``: the game's boolean 10x10xC state, channels first, one per
    agent step (``stack_size`` 1: the paper's network sees one state; MinAtar's states carry
    the motion that Atari needs 4 frames for, e.g. Breakout's trail channel). Rewards are the
    game's (0/1 but for Seaquest's surfacing bonus), never clipped, as in the paper. Sticky
    actions as MinAtar's ``Environment.act``: with probability ``repeat_action_probability``
    the previous action is played instead; the previous action is NOOP after each reset, as
    ALE's. A game is truncated after ``max_episode_frames`` agent steps (one frame each).
    """

    frame_dtype = np.dtype(np.uint8)
    stack_size = 1
    codec = "lz4"  # 100-byte frames of 0/1: lz4 on the raw bytes, like the Atari frames
    frames_per_step = 1
    clip_rewards = False
    atari = False

    def __init__(
        self,
        game: str,
        num_envs: int,
        seed: int,
        *,
        max_episode_frames: int = 108_000,
        repeat_action_probability: float = MINATAR_REPEAT_ACTION_PROBABILITY,
        full_action_space: bool = False,
    ):
        if max_episode_frames < 1:
            raise ValueError(f"max_episode_frames must be >= 1, got {max_episode_frames}")
        if not 0.0 <= repeat_action_probability <= 1.0:
            raise ValueError(f"repeat_action_probability must lie in [0, 1], got {repeat_action_probability}")
        env_class = _minatar_env_class(game)
        self.game = game
        self.num_envs = num_envs
        self.max_episode_frames = max_episode_frames
        self.repeat_action_probability = float(repeat_action_probability)
        self._games = [env_class(ramping=True) for _ in range(num_envs)]  # difficulty ramping: MinAtar's default
        for i, g in enumerate(self._games):
            g.random = np.random.RandomState((seed + i) % 2**32)  # MinAtar's games draw from .random
        self._sticky_rngs = [np.random.default_rng([seed + i, 1]) for i in range(num_envs)]
        self._action_set = list(range(6)) if full_action_space else list(self._games[0].minimal_action_set())
        self.num_actions = len(self._action_set)
        height, width, channels = self._games[0].state_shape()
        self.frame_shape = (int(channels), int(height), int(width))
        self._last_action = np.zeros(num_envs, np.int64)
        self._steps = np.zeros(num_envs, np.int64)
        self._started = False

    def _frame(self, i: int) -> np.ndarray:
        return self._games[i].state().transpose(2, 0, 1).astype(np.uint8)

    def _reset_one(self, i: int) -> np.ndarray:
        self._games[i].reset()
        self._last_action[i] = 0
        self._steps[i] = 0
        return self._frame(i)

    def reset(self) -> np.ndarray:
        frames = np.stack([self._reset_one(i) for i in range(self.num_envs)])
        self._started = True
        return frames

    def step(self, actions: np.ndarray) -> EnvStep:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        n = self.num_envs
        frames = np.empty((n, *self.frame_shape), np.uint8)
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        for i, game in enumerate(self._games):
            action = self._action_set[actions[i]]
            if self._sticky_rngs[i].random() < self.repeat_action_probability:
                action = int(self._last_action[i])
            self._last_action[i] = action
            reward, ended = game.act(action)
            self._steps[i] += 1
            frames[i] = self._frame(i)
            rewards[i] = reward
            terminated[i] = bool(ended)
        truncated = (self._steps >= self.max_episode_frames) & ~terminated
        game_over = terminated | truncated
        restart = frames.copy()
        for i in np.flatnonzero(game_over):
            restart[i] = self._reset_one(i)
        return EnvStep(frames, rewards, terminated, truncated, game_over, restart)

    def close(self) -> None:
        self._games = []
        self._started = False


# --------------------------------------------------------------------------- flat vectors


class GymVectorEnv(VectorEnv):
    """E gymnasium envs with flat Box observations (as float32) and Discrete actions,
    stepped in a loop and reset by hand as soon as an episode ends. game_over is
    terminated | truncated (no lives)."""

    frame_dtype = np.dtype(np.float32)
    stack_size = 1
    codec = "raw"
    frames_per_step = 1
    clip_rewards = False
    atari = False

    def __init__(self, env_id: str, num_envs: int, seed: int):
        self.env_id = env_id
        self.num_envs = num_envs
        self.seed = seed
        self._envs = [_make_flat_env(env_id) for _ in range(num_envs)]
        space = self._envs[0].action_space
        self.num_actions = int(space.n)
        self._action_start = int(space.start)
        self.frame_shape = tuple(int(d) for d in self._envs[0].observation_space.shape)
        self._seeded = False

    def _reset_one(self, i: int) -> np.ndarray:
        seed = None if self._seeded else self.seed + i
        obs, _ = self._envs[i].reset(seed=seed)
        return np.asarray(obs, np.float32)

    def reset(self) -> np.ndarray:
        frames = np.stack([self._reset_one(i) for i in range(self.num_envs)])
        self._seeded = True
        return frames

    def step(self, actions: np.ndarray) -> EnvStep:
        if not self._seeded:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        n = self.num_envs
        frames = np.empty((n, *self.frame_shape), np.float32)
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        for i, env in enumerate(self._envs):
            obs, reward, term, trunc, _ = env.step(int(actions[i]) + self._action_start)
            frames[i] = obs
            rewards[i] = reward
            terminated[i] = term
            truncated[i] = trunc and not term
        game_over = terminated | truncated
        restart = frames.copy()
        for i in np.flatnonzero(game_over):
            restart[i] = self._reset_one(i)
        return EnvStep(frames, rewards, terminated, truncated, game_over, restart)

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []
