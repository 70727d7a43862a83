"""A text progress bar for long commands (no third-party dependency)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class StepBar:
    """``[#####.....]  42%  step 180/429  <extra>`` redrawn in place on a terminal, at most 10 times a second.

    When the stream is not a terminal (CI logs, pipes), it writes only ``close()``'s final line.
    """

    def __init__(self, stream: TextIO | None = None, *, width: int = 28, interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.interval = interval
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._line = ""

    def update(self, done: int, total: int, extra: str = "", *, force: bool = False) -> None:
        frac = 0.0 if total <= 0 else min(1.0, done / total)
        filled = int(round(frac * self.width))
        self._line = f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:5.1f}%  {extra}"
        now = time.monotonic()
        if self.live and (force or now - self._last >= self.interval):
            self.stream.write("\r\033[K" + self._line)
            self.stream.flush()
            self._last = now

    def close(self, final: str | None = None) -> None:
        line = final if final is not None else self._line
        if self.live:
            self.stream.write("\r\033[K")
        if line:
            self.stream.write(line + "\n")
        self.stream.flush()
