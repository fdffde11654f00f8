"""A one-line status for long stages: redrawn in place on a terminal, silent otherwise.

Logs and CI output stay clean (no carriage returns, no repeated lines); a person at a
terminal sees what the program is doing: replay warm-up, evaluation, snapshot writing.
"""

from __future__ import annotations

import sys
import time


class Status:
    def __init__(self, stream=None, min_interval: float = 0.2):
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = min_interval
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        """Show ``text`` as the current status (rate-limited unless ``force``)."""
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def done(self, text: str | None = None) -> None:
        """End the status line (with a final ``text`` if given)."""
        if not self.live:
            return
        if text is not None:
            self.update(text, force=True)
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0
