"""Recording and writing the best game of an evaluation as a video (.mp4 or .gif).

``learner.evaluate --video`` records every emulator frame of each game in progress
(:class:`BestGameRecorder`, a screen hook of ``common.envs.AleVectorEnv``, lz4-compressed
in temporary files so memory stays small for long games), keeps the best counted game,
and writes it at the emulator's own size, 160x210 RGB, at the game's own speed
(:func:`write_video` says what each format holds). Apart from the games themselves
(``learner.games``): only the command-line evaluation records, never the training.
"""

from __future__ import annotations

import collections
import math
import struct
import tempfile
from pathlib import Path

import numpy as np

from learner.games import EvaluationError

VIDEO_SUFFIXES = (".mp4", ".gif")
MP4_FPS = 60.0  # the ALE emulator's frame rate (NTSC)
GIF_STRIDE = 3  # every 3rd emulator frame ...
GIF_FRAME_MS = 50  # ... shown for 50 ms: 20 fps, the game's own speed


def check_video_path(video: str | Path) -> Path:
    """The video path if we can write it there; EvaluationError naming the problem if not."""
    path = Path(video)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise EvaluationError(
            f"--video {video}: unsupported video format {path.suffix or '(no suffix)'!r}; use .mp4 or .gif"
        )
    if not path.parent.is_dir():
        raise EvaluationError(f"--video {video}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise EvaluationError(f"--video {video}: is a directory")
    return path


class _FrameFile:
    """The RGB frames of one game: lz4 blocks in an anonymous temporary file (deleted on
    close), so memory stays small even for 30-minute games."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.count = 0

    def append(self, rgb: np.ndarray) -> None:
        import lz4.block

        data = lz4.block.compress(np.ascontiguousarray(rgb).tobytes(), store_size=False)
        self.file.write(struct.pack("<I", len(data)))
        self.file.write(data)
        self.count += 1

    def frames(self, shape: tuple[int, ...]):
        """Yields the frames uint8[shape] in order."""
        import lz4.block

        size = int(np.prod(shape))
        self.file.flush()
        self.file.seek(0)
        for _ in range(self.count):
            (n,) = struct.unpack("<I", self.file.read(4))
            yield np.frombuffer(lz4.block.decompress(self.file.read(n), uncompressed_size=size), np.uint8).reshape(
                shape
            )

    def close(self) -> None:
        self.file.close()


class BestGameRecorder:
    """A ScreenHook (``common.envs.AleVectorEnv.set_screen_hook``) that keeps the frames of
    each env's game in progress and of the best finished game so far.

    Each ``step`` of the env may end a game of env i and start the next (``new_game(i)``);
    the evaluation loop then calls :meth:`end_step` and, for each finished episode the
    actor reports, :meth:`finished`. If a game ends during its own no-op start, the env
    resets it again in the same step without reporting an episode: a second ``new_game(i)``
    in one step drops the aborted start.
    """

    def __init__(self, num_envs: int):
        self.current = [_FrameFile() for _ in range(num_envs)]
        self.done: list[collections.deque[_FrameFile]] = [collections.deque() for _ in range(num_envs)]
        self._reset_this_step = [False] * num_envs
        self.shape: tuple[int, ...] | None = None
        self.best: _FrameFile | None = None
        self.best_score = -math.inf
        self.best_episode = -1

    # ScreenHook
    def new_game(self, i: int) -> None:
        old = self.current[i]
        self.current[i] = _FrameFile()
        if old.count and not self._reset_this_step[i]:
            self.done[i].append(old)
        else:
            old.close()
        self._reset_this_step[i] = True

    def frame(self, i: int, rgb: np.ndarray) -> None:
        self.shape = rgb.shape
        self.current[i].append(rgb)

    # evaluation loop
    def end_step(self) -> None:
        self._reset_this_step = [False] * len(self._reset_this_step)

    def finished(self, i: int, score: float, episode: int, keep: bool = True) -> int:
        """Env i's oldest finished game is episode ``episode``: kept if ``keep`` and it
        beats the best so far (on a tie, the lower episode index). Returns its emulator frames."""
        game = self.done[i].popleft() if self.done[i] else _FrameFile()
        frames = game.count
        if keep and (score > self.best_score or (score == self.best_score and episode < self.best_episode)):
            if self.best is not None:
                self.best.close()
            self.best, self.best_score, self.best_episode = game, score, episode
        else:
            game.close()
        return frames

    def close(self) -> None:
        for f in self.current:
            f.close()
        for q in self.done:
            for f in q:
                f.close()
        if self.best is not None:
            self.best.close()


def write_video(path: Path, frames, shape: tuple[int, ...]) -> int:
    """Write RGB frames ``uint8[H, W, 3]`` to ``path`` (.mp4 or .gif); returns the frames written.

    mp4 has every emulator frame at 60 fps, the game's own speed: the no-op start, the FIRE
    presses and all 4 frames of each agent step (frame skip), as many video frames as the
    game's ALE episode frame number. A GIF cannot show 60 fps (its frame delay is in 1/100 s
    and viewers slow delays under 2/100 s down), so it has every 3rd emulator frame at 20
    fps, still the game's own speed; Pillow merges identical consecutive frames into one
    longer frame, so a GIF may hold fewer frames while lasting as long. A GIF is built in
    memory: prefer mp4 for long games.
    """
    height, width = shape[:2]
    if path.suffix.lower() == ".mp4":
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), MP4_FPS, (width, height))
        if not writer.isOpened():
            raise EvaluationError(f"--video {path}: OpenCV cannot open an mp4v writer there")
        n = 0
        try:
            for rgb in frames:
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            writer.release()
        return n
    from PIL import Image

    images = [Image.fromarray(rgb) for k, rgb in enumerate(frames) if k % GIF_STRIDE == 0]
    if not images:
        raise EvaluationError(f"--video {path}: the best episode has no frames")
    images[0].save(path, save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
    return len(images)


def write_best_video(path: Path, recorder: BestGameRecorder) -> dict:
    """Write the recorder's best game to ``path``; the result's ``video`` entry."""
    best = recorder.best
    written = write_video(path, best.frames(recorder.shape), recorder.shape)
    gif = path.suffix.lower() == ".gif"
    return {
        "path": str(path),
        "format": "gif" if gif else "mp4",
        "fps": 1000.0 / GIF_FRAME_MS if gif else MP4_FPS,
        "frames_written": written,
        "emulator_frames": best.count,
        "episode": recorder.best_episode,
        "score": recorder.best_score,
        "width": int(recorder.shape[1]),
        "height": int(recorder.shape[0]),
    }
