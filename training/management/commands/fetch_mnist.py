"""``python manage.py fetch_mnist``: download and verify the MNIST archives."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from engine.data import (
    DEFAULT_MIRRORS,
    SPLIT_FILES,
    DataError,
    download_mnist,
    load_mnist,
    mnist_raw_dir,
)
from training.management.progress import LiveLine

_KB = 1024
_MB = 1024 * 1024


def _size(n: float) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB else f"{n / _KB:.1f} KB"


class ProgressBar:
    """One line per file: name, bar, percent, size and rate (size and rate alone when the total is unknown)."""

    def __init__(self, out: OutputWrapper, *, width: int = 30) -> None:
        self.line = LiveLine(out)
        self.width = width
        self.name: str | None = None
        self.started = 0.0
        self.text = ""

    def update(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if name != self.name:
            self.finish()
            self.name, self.started = name, now
        self.text = self._render(name, done, total, now - self.started)
        self.line.show(self.text, force=total is not None and done >= total)

    def finish(self) -> None:
        """End the current file's line, if any."""
        if self.name is not None:
            self.line.end(self.text)
            self.name = None

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
