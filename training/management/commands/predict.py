"""``python manage.py predict IMAGE...``: recognize the digit in image files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image, UnidentifiedImageError

from engine.preprocessing import EmptyDrawingError, preprocess
from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint


class Command(BaseCommand):
    help = "Print the predicted digit and the ten probabilities for each image file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("images", nargs="+", metavar="IMAGE")
        parser.add_argument(
            "--checkpoint", help="checkpoint file (default: the shipped flagship, training/shipped/cnn.pt)"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        path = Path(opts["checkpoint"] or Path(settings.SHIPPED_CHECKPOINTS_DIR) / "cnn.pt")
        try:
            model = model_from_checkpoint(load_checkpoint(path))
        except CheckpointError as exc:
            raise CommandError(str(exc)) from None
        failures = 0
        for name in opts["images"]:
            try:
                with Image.open(name) as image:
                    image.load()
                    x = preprocess(image)
            except FileNotFoundError:
                self.stderr.write(f"{name}: no such file")
                failures += 1
                continue
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                message = "no ink found (empty drawing)" if isinstance(exc, EmptyDrawingError) else f"cannot read image ({exc})"
                self.stderr.write(f"{name}: {message}")
                failures += 1
                continue
            with torch.inference_mode():
                probs = model(x.unsqueeze(0)).softmax(dim=1)[0]
            digit = int(probs.argmax())
            table = "  ".join(f"{d}:{100 * float(p):5.1f}%" for d, p in enumerate(probs))
            self.stdout.write(f"{name}: {digit} ({100 * float(probs[digit]):.1f}%)   {table}")
        if failures:
            raise CommandError(f"{failures} of {len(opts['images'])} image(s) could not be recognized")
