"""ALE games with DeepMind's preprocessing, driven through ``ALEInterface`` directly.

:class:`AleVectorEnv` follows the DeepMind preprocessing: 1..``noop_max`` no-op frames after
each reset, FIRE pressed by the env after a reset and after a life loss in games that need
it (FIRE is action 1 and the game has >= 3 actions, as in baselines' ``FireResetEnv``), each
action repeated for 4 frames with the max of the last two frames taken, 84x84 grayscale
(``cv2.INTER_AREA``, as gymnasium's ``AtariPreprocessing``), no sticky actions
(``repeat_action_probability`` 0) and the game's minimal action set by default
(``full_action_space`` gives all 18), truncation after ``max_episode_frames`` emulator frames
of an episode (counted from the reset, no-ops included). With ``episodic_life`` a life loss
is terminal for learning while the game goes on (score accumulating across lives); the
default turns it on for games with lives. The protocol's numbers come from
:mod:`common.envs.protocol`.

It drives ``ALEInterface`` directly rather than ale-py's own ``AtariVectorEnv``, which misses
FIRE after a life loss, garbles final frames and is no faster per core (measured:
``docs/design-notes.md``). A test checks its frames against gymnasium's
``AtariPreprocessing`` step by step. Videos hook in through :mod:`common.envs.video`.
"""

from __future__ import annotations

import cv2
import numpy as np

from common.envs.base import EnvStep, VectorEnv
from common.envs.protocol import (
    ALE_SEED_LIMIT,
    ATARI_FRAME_SHAPE,
    ATARI_FRAME_SKIP,
    ATARI_MAX_EPISODE_FRAMES,
    ATARI_NOOP_MAX,
    ATARI_REPEAT_ACTION_PROBABILITY,
    ATARI_STACK_SIZE,
)
from common.envs.video import ScreenHook, hook_ales

FIRE_ACTION_INDEX = 1


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
        noop_max: int = ATARI_NOOP_MAX,
        max_episode_frames: int = ATARI_MAX_EPISODE_FRAMES,
        repeat_action_probability: float = ATARI_REPEAT_ACTION_PROBABILITY,
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
        self._ales = [
            _new_ale(rom_path, (seed + i) % ALE_SEED_LIMIT, repeat_action_probability) for i in range(num_envs)
        ]
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

    def _finished(self, ale) -> bool:
        """The game is over or out of time: no emulator frame may follow."""
        return ale.game_over(with_truncation=False) or self._out_of_time(ale)

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
            out = self._step_one(i, self._action_set[actions[i]])
            frames[i], restart[i], rewards[i], terminated[i], truncated[i], game_over[i] = out
        return EnvStep(frames, rewards, terminated, truncated, game_over, restart)

    def _step_one(self, i: int, action) -> tuple[np.ndarray, np.ndarray, float, bool, bool, bool]:
        """One agent step of env i: (frame, restart frame, reward, terminated, truncated, game over)."""
        ale = self._ales[i]
        reward = self._play_frames(i, action)
        frame = self._resize(self._screens[i, 0])
        continuation = frame
        lives = ale.lives()
        life_lost = lives < self._lives[i]
        self._lives[i] = lives
        if life_lost and self.fire_on_start and not self._finished(ale):
            fire_reward = ale.act(self._fire_action)
            if self._finished(ale):
                reward += fire_reward  # the game ended in that frame: nothing follows it
            else:
                self._pending[i] = fire_reward
                continuation = self._screen(i)
        ended = ale.game_over(with_truncation=False)
        out_of_time = self._out_of_time(ale)
        terminated = ended or (life_lost and self.episodic_life)
        if ended or out_of_time:
            return frame, self._reset_one(i), reward, terminated, out_of_time and not terminated, True
        if terminated:
            return frame, continuation, reward, True, False, False
        return continuation, continuation, reward, False, False, False

    def _play_frames(self, i: int, action) -> float:
        """Env i repeats ``action`` for the frame skip (fewer frames where the game ends) and
        leaves the max of the last two screens in ``self._screens[i, 0]``; returns the reward
        with the pending one of unseen frames."""
        ale, screens = self._ales[i], self._screens[i]
        reward = self._pending[i]
        self._pending[i] = 0.0
        for k in range(ATARI_FRAME_SKIP):
            reward += ale.act(action)
            if k >= ATARI_FRAME_SKIP - 2:
                ale.getScreenGrayscale(screens[k - (ATARI_FRAME_SKIP - 2)])
            if self._finished(ale):
                if k < ATARI_FRAME_SKIP - 1:  # cut short: the final frame is the last screen
                    ale.getScreenGrayscale(screens[1])
                    screens[0] = screens[1]
                break
        np.maximum(screens[0], screens[1], out=screens[0])
        return reward

    def close(self) -> None:
        self._ales = []
        self._started = False

    # ---- screens for videos (optional; the stepping code above is the same without them)

    def screens(self) -> np.ndarray:
        """uint8[E, 210, 160, 3]: each emulator's current screen in RGB, not preprocessed."""
        return np.stack([ale.getScreenRGB() for ale in self._ales])

    def set_screen_hook(self, hook: ScreenHook | None) -> None:
        """Show ``hook`` every emulator frame of every env (for videos); None turns it off.

        ``hook.new_game(i)`` is called when env i's game is reset (before its no-ops; on
        ``reset()`` and when a game ends inside ``step``), then ``hook.frame(i, rgb)``
        after each emulator frame of env i, with ``rgb`` its screen ``uint8[210, 160, 3]``:
        the no-ops, the FIRE presses, the frames of each agent step (fewer than 4 where
        the game ends). So the frames between two ``new_game(i)`` are exactly the frames
        of one game, as many as its ALE episode frame number. Done by wrapping each
        ALEInterface (:func:`common.envs.video.hook_ales`), so the env steps the same way,
        hook or not.
        """
        self._ales = hook_ales(self._ales, hook)


def _new_ale(rom_path: str, seed: int, repeat_action_probability: float):
    """One ``ALEInterface`` with ``rom_path`` loaded and ``seed`` (below ``ALE_SEED_LIMIT``) set."""
    import ale_py

    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", float(repeat_action_probability))
    ale.loadROM(rom_path)
    return ale
