"""``python manage.py predict IMAGE...``: recognize the digit in image files, as the site's API would.

Each file goes the API's way: the same image checks (``classifier.images.decode_image``), the same
preprocessing, and the same serving path (``ServingModel.probabilities``: the checkpoint's temperature and
test-time views). Without options the model is the one ``POST /api/predict/`` uses now (the active
version); ``--model ID`` is the API's ``model`` field; ``--checkpoint FILE`` serves a checkpoint file the
same way (its own temperature and views), without the database.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from classifier.images import decode_image
from classifier.inference import registry
from classifier.models import ModelVersion
from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from engine.preprocessing import EmptyDrawingError, preprocess
from engine.serving import checkpoint_temperature, checkpoint_tta, predict_probabilities
from mnistsite.errors import ApplicationError

Probabilities = Callable[[torch.Tensor], torch.Tensor]  # [N,1,28,28] inputs -> [N,10] probabilities


class Command(BaseCommand):
    help = ("Print the predicted digit and the ten probabilities for each image file, as POST /api/predict/ "
            "answers them (same model, temperature and test-time views).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("images", nargs="+", metavar="IMAGE")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--model", type=int, metavar="ID",
                           help="a model version's id (default: the version the site serves now)")
        which.add_argument("--checkpoint", metavar="FILE",
                           help="a checkpoint file instead, served with its own temperature and test-time views")
        parser.add_argument("--json", action="store_true",
                            help="one JSON object a line: image, digit, confidence and the ten probabilities "
                                 "(six decimals, as the API answers)")

    def handle(self, *args: Any, **opts: Any) -> None:
        label, probabilities = self._model(opts["checkpoint"], opts["model"])
        self.stderr.write(f"model: {label}")
        failures = 0
        for name in opts["images"]:
            try:
                x = preprocess(decode_image(Path(name).read_bytes()).image)
            except FileNotFoundError:
                self.stderr.write(f"{name}: no such file")
                failures += 1
                continue
            except (ApplicationError, OSError, ValueError) as exc:
                if isinstance(exc, EmptyDrawingError):
                    message = "no ink found (empty drawing)"
                else:
                    message = f"cannot read image ({getattr(exc, 'message', None) or exc})"
                self.stderr.write(f"{name}: {message}")
                failures += 1
                continue
            with torch.inference_mode():
                probs = probabilities(x.unsqueeze(0))[0]
            digit = int(probs.argmax())
            if opts["json"]:
                rounded = [round(float(p), 6) for p in probs]
                self.stdout.write(json.dumps({"image": name, "digit": digit, "confidence": rounded[digit],
                                              "probabilities": rounded, "model": label}))
                continue
            table = "  ".join(f"{d}:{100 * float(p):5.1f}%" for d, p in enumerate(probs))
            self.stdout.write(f"{name}: {digit} ({100 * float(probs[digit]):.1f}%)   {table}")
        if failures:
            raise CommandError(f"{failures} of {len(opts['images'])} image(s) could not be recognized")

    def _model(self, checkpoint: str | None, version_id: int | None) -> tuple[str, Probabilities]:
        if checkpoint:
            try:
                loaded = load_checkpoint(Path(checkpoint))
                module = model_from_checkpoint(loaded)
            except CheckpointError as exc:
                raise CommandError(str(exc)) from None
            temperature, tta = checkpoint_temperature(loaded), checkpoint_tta(loaded)
            return (f"{checkpoint} (T={temperature:.3g}, views: {tta})",
                    lambda x: predict_probabilities(module, x, temperature=temperature, tta=tta))
        try:
            if version_id is None:
                serving = registry.serving()
            else:
                version = ModelVersion.objects.filter(pk=version_id).first()
                if version is None:
                    raise CommandError(f"There is no model version {version_id}.")
                serving = registry.for_version(version)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} (or name a checkpoint file with --checkpoint)") from None
        except DatabaseError as exc:
            raise CommandError(f"The site's database cannot be read ({exc}): run `python manage.py migrate` "
                               f"first, or name a checkpoint file with --checkpoint.") from None
        return (f"{serving.ref.label} (T={serving.temperature:.3g}, views: {serving.tta})",
                serving.probabilities)
