"""Progress display for long commands: one line redrawn in place on a terminal (no dependency)."""
from __future__ import annotations

import time

from django.core.management.base import OutputWrapper


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class LiveLine:
    """A status line redrawn in place at most every ``interval`` seconds on a terminal.

    When the output is not a terminal (CI logs, pipes, captured output) nothing is drawn while it
    changes; ``end()`` writes its final text as an ordinary line.
    """

    def __init__(self, out: OutputWrapper, *, interval: float = 0.1) -> None:
        self.out = out
        self.interval = interval
        self.live = out.isatty()
        self._last = float("-inf")

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.live and (force or now - self._last >= self.interval):
            self._write("\r\033[K" + text)
            self._last = now

    def end(self, final: str = "") -> None:
        """Replace the line with ``final`` (nothing when empty) and move to the next line."""
        if self.live:
            self._write("\r\033[K")
        if final:
            self._write(final + "\n")

    def _write(self, text: str) -> None:
        # Plain style: Django colours stderr as errors on a terminal by default.
        self.out.write(text, style_func=str, ending="")
        self.out.flush()


class StepBar:
    """``[#####.....]  42.0%  <extra>`` for work counted in steps."""

    def __init__(self, out: OutputWrapper, *, width: int = 28) -> None:
        self.line = LiveLine(out)
        self.width = width
        self.text = ""

    def update(self, done: int, total: int, extra: str = "") -> None:
        frac = 0.0 if total <= 0 else min(1.0, done / total)
        filled = int(round(frac * self.width))
        self.text = f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:5.1f}%  {extra}"
        self.line.show(self.text, force=done >= total)

    def close(self, final: str | None = None) -> None:
        """End the bar's line with ``final`` (default: the bar as it stands)."""
        self.line.end(self.text if final is None else final)
