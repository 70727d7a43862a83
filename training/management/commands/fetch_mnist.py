"""``python manage.py fetch_mnist``: download and verify the MNIST archives."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from training.engine.data import (
    DEFAULT_MIRRORS,
    SPLIT_FILES,
    DataError,
    download_mnist,
    load_mnist,
    mnist_raw_dir,
)

_KB = 1024
_MB = 1024 * 1024


def _size(n: float) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB else f"{n / _KB:.1f} KB"


class ProgressBar:
    """A one-line text progress bar redrawn with ``\\r``.

    On a terminal it redraws at most every ``interval`` seconds; elsewhere (logs,
    captured output) only the final state of each file is written.
    """

    def __init__(self, out: OutputWrapper, *, width: int = 30, interval: float = 0.1) -> None:
        self.out = out
        self.width = width
        self.interval = interval
        self.live = out.isatty()
        self.name: str | None = None
        self.started = 0.0
        self.last_draw = 0.0
        self.line = ""
        self.drawn = 0
        self.shown = ""

    def update(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if name != self.name:
            self.finish()
            self.name, self.started, self.last_draw = name, now, 0.0
        self.line = self._render(name, done, total, now - self.started)
        finished = total is not None and done >= total
        if self.live and (finished or now - self.last_draw >= self.interval):
            self._draw(ending="")
            self.last_draw = now

    def finish(self) -> None:
        """End the current bar's line, if any."""
        if self.name is None:
            return
        if self.live and self.shown == self.line:
            self.out.write("", style_func=str, ending="\n")
        else:
            self._draw(ending="\n")
        self.name = None
        self.drawn = 0

    def _draw(self, *, ending: str) -> None:
        # Pad over the previous drawing so a shorter line leaves no stray characters.
        text = self.line.ljust(self.drawn)
        self.drawn = len(self.line)
        self.shown = self.line
        # Plain style: Django colours stderr as errors on a terminal by default.
        self.out.write(("\r" if self.live else "") + text, style_func=str, ending=ending)
        self.out.flush()

    def _render(self, name: str, done: int, total: int | None, elapsed: float) -> str:
        rate = _size(done / elapsed) + "/s" if elapsed > 0 else "-"
        if total:
            fraction = min(done / total, 1.0)
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            return f"  {name} [{bar}] {fraction:4.0%} {_size(done)}/{_size(total)} {rate}"
        return f"  {name} {_size(done)} {rate}"


class Command(BaseCommand):
    help = (
        "Download the MNIST archives into MNIST_ROOT/MNIST/raw/ (or --root), verifying "
        "their md5. Files already present and intact are left alone."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--root",
            type=Path,
            default=None,
            help="Dataset root (files go to ROOT/MNIST/raw/). Default: settings.MNIST_ROOT.",
        )
        parser.add_argument(
            "--mirror",
            action="append",
            dest="mirrors",
            metavar="URL",
            default=None,
            help=(
                "Base URL to fetch the .gz files from; repeat to try several in order. "
                f"Default: {' then '.join(DEFAULT_MIRRORS)}"
            ),
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="Network timeout in seconds per request (default 30).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        root = Path(options["root"] if options["root"] is not None else settings.MNIST_ROOT)
        raw = mnist_raw_dir(root)
        self.stdout.write(f"MNIST archives in {raw}")

        bar = ProgressBar(self.stderr)

        def on_file(path: Path, downloaded: bool) -> None:
            bar.finish()
            status = "downloaded, md5 verified" if downloaded else "ok (already present)"
            self.stdout.write(f"  {path.name}: {status}")

        try:
            download_mnist(
                root,
                mirrors=options["mirrors"],
                progress=bar.update,
                timeout=options["timeout"],
                on_file=on_file,
            )
            counts = {split: len(load_mnist(root, split, verify=True)) for split in SPLIT_FILES}
        except DataError as exc:
            bar.finish()
            raise CommandError(str(exc)) from exc

        summary = ", ".join(f"{split} {n} images" for split, n in counts.items())
        self.stdout.write(self.style.SUCCESS(f"MNIST ready in {raw}: {summary}"))
