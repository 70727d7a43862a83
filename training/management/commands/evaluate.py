"""``python manage.py evaluate``: a checkpoint's accuracy on the MNIST test set."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from engine.data import DataError, load_mnist
from engine.evaluate import evaluate


class Command(BaseCommand):
    help = "Evaluate a checkpoint on the 10,000 MNIST test images (from MNIST_ROOT)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--checkpoint", help="checkpoint file (default: the shipped flagship, training/shipped/cnn.pt)"
        )
        parser.add_argument("--sha256", help="refuse the file unless its sha256 matches")
        parser.add_argument("--mnist-root", default=None, help="defaults to the MNIST_ROOT setting")

    def handle(self, *args: Any, **opts: Any) -> None:
        path = Path(opts["checkpoint"] or Path(settings.SHIPPED_CHECKPOINTS_DIR) / "cnn.pt")
        try:
            checkpoint = load_checkpoint(path, sha256=opts["sha256"])
            model = model_from_checkpoint(checkpoint)
            test = load_mnist(opts["mnist_root"] or settings.MNIST_ROOT, "test")
        except (CheckpointError, DataError) as exc:
            raise CommandError(str(exc)) from None
        metrics = evaluate(model, test.images, test.labels)
        self.stdout.write(
            f"{path}: {checkpoint['arch']}, {checkpoint.get('num_parameters', 0):,} parameters, "
            f"created {checkpoint.get('created_at', '?')}"
        )
        self.stdout.write("per-class accuracy: " + "  ".join(
            f"{digit}: {100 * acc:.2f}%" for digit, acc in enumerate(metrics["per_class_accuracy"])
        ))
        self.stdout.write(f"test loss: {metrics['loss']:.4f}")
        self.stdout.write(f"test accuracy: {100 * metrics['accuracy']:.2f}% (n={metrics['n']})")
