"""The labelled user drawings as training and evaluation data, and the held-out field set.

A labelled prediction (a drawing whose correct digit a person told us) belongs either to the
training part or to the *field set*, decided once and for all by a hash of its id: about
``TRAINING_FIELD_SET_PERCENT`` percent are field-set drawings. Training never sees them; every new
version is evaluated on them, next to the MNIST test set.

"Labelled" means the prediction's effective label (``classifier.labels``), and only one trusted enough:
the training part holds labels at least ``LABELS_TRAIN_TRUST`` (default: trusted sources only), the field
set labels at least ``LABELS_EVIDENCE_TRUST`` (default: trusted sources only), so what a visitor says
neither trains nor judges a version until staff confirm it. A drawing marked "not a digit" is never used.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from django.conf import settings

from .models import Prediction

PIXELS = 28 * 28


def in_field_set(prediction_id: int, *, percent: int | None = None) -> bool:
    """Whether a labelled prediction is held out for evaluation; depends only on its id."""
    share = settings.TRAINING_FIELD_SET_PERCENT if percent is None else percent
    digest = hashlib.sha256(f"mnistsite-field-set:{prediction_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < share


@dataclass(frozen=True)
class Drawings:
    """Labelled drawings as tensors: ``images`` uint8 ``[M,28,28]`` (ink = 255), ``labels`` int64 ``[M]``."""

    ids: list[int]
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> "Drawings":
        return cls(ids=[], images=torch.zeros((0, 28, 28), dtype=torch.uint8), labels=torch.zeros((0,), dtype=torch.int64))

    @property
    def fingerprint(self) -> str:
        """``drawings:<count>:<sha256 of the ids and labels used>``."""
        digest = hashlib.sha256()
        for pk, label in zip(self.ids, self.labels.tolist()):
            digest.update(f"{pk}:{label}\n".encode())
        return f"drawings:{len(self.ids)}:{digest.hexdigest()[:12]}"


def field_set() -> Drawings:
    """The held-out labelled drawings every new version is evaluated on."""
    return labelled_drawings(part="field")


def labelled_drawings(*, part: str) -> Drawings:
    """The training part (``part="train"``) or the field set (``part="field"``) of the labelled drawings."""
    if part not in {"train", "field"}:
        raise ValueError(f"part must be 'train' or 'field', not {part!r}")
    want_field = part == "field"
    ids: list[int] = []
    labels: list[int] = []
    pixels: list[bytes] = []
    trusted = Prediction.objects.for_evidence() if want_field else Prediction.objects.for_training()
    usable = trusted.filter(not_a_digit=False)  # "not a digit" never trains
    rows = usable.order_by("id").values_list("id", "label", "input_pixels")
    for pk, label, raw in rows.iterator(chunk_size=2000):
        if in_field_set(pk) != want_field or raw is None:
            continue
        raw = bytes(raw)
        if len(raw) != PIXELS:
            continue  # not a 28x28 input; never expected, never fatal
        ids.append(pk)
        labels.append(int(label))
        pixels.append(raw)
    if not ids:
        return Drawings.empty()
    images = torch.frombuffer(bytearray(b"".join(pixels)), dtype=torch.uint8).view(len(ids), 28, 28)
    return Drawings(ids=ids, images=images, labels=torch.tensor(labels, dtype=torch.int64))
