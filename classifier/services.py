"""Writes: making and storing predictions, labelling them."""
from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from mnistsite import metrics
from mnistsite.errors import ApplicationError

from .images import DecodedImage
from .inference import ServingModel, registry
from .labels import label_record, label_value
from .models import Label, ModelVersion, Prediction
from .shadow import shadow_submit
from engine.preprocessing import EmptyDrawingError, preprocess

log = logging.getLogger(__name__)


@dataclass
class ModelAnswer:
    model: ServingModel
    probabilities: list[float]

    @property
    def digit(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def confidence(self) -> float:
        return float(max(self.probabilities))


@dataclass
class PredictionOutcome:
    prediction: Prediction
    tensor: torch.Tensor  # the [1,28,28] input the model saw
    model: ServingModel
    label_key: str  # the secret that lets whoever holds it label this prediction; only its digest is stored
    comparisons: list[ModelAnswer] = field(default_factory=list)


def new_label_key() -> tuple[str, str]:
    """A fresh label key and its sha256 digest (what is stored)."""
    key = secrets.token_urlsafe(24)
    return key, label_key_digest(key)


def label_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Client:
    """Who asked: used to record the prediction and to decide who may label it later."""

    user: AbstractBaseUser | AnonymousUser | None = None
    session_key: str = ""
    ip: str | None = None
    source: str = Prediction.Source.API


def _prepare(decoded: DecodedImage, *, index: int | None = None) -> torch.Tensor:
    try:
        return preprocess(decoded.image)
    except EmptyDrawingError as exc:
        where = {"index": index} if index is not None else None
        raise ApplicationError("empty_drawing", "The drawing is empty: no ink was found.",
                               detail=where or str(exc), status=422) from None


def _model_for(version_id: int | None, *, staff: bool = False) -> ServingModel:
    """The model that answers: the serving (active) one when no version is named. A named version must be
    vetted (``ModelVersion.objects.vetted()``: active once, or shipped, and not archived) unless the caller is
    staff: fresh candidates and archived versions are not the public's to ask (403 ``model_not_public``)."""
    if version_id is None:
        try:
            return registry.serving()
        except ApplicationError:
            metrics.prediction(version="none", outcome="unavailable")
            raise
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise ApplicationError("model_not_found", f"There is no model version {version_id}.",
                               detail={"model": version_id}, status=404)
    if not staff and not ModelVersion.objects.vetted().filter(pk=version.pk).exists():
        why = "it is archived" if version.status == ModelVersion.Status.ARCHIVED else "it was never made active"
        raise ApplicationError(
            "model_not_public",
            f"Model version {version_id} is not open to the public: {why}. Leave out `model` for the active "
            "version, or name one that was active once or shipped with the site.",
            detail={"model": version_id}, status=403)
    return registry.for_version(version)


def _is_staff(client: Client) -> bool:
    return bool(client.user is not None and client.user.is_active and client.user.is_staff)


def _comparison_models(main: ServingModel, *, staff: bool) -> list[ServingModel]:
    """The main model, then for every other architecture its best vetted version (active once, or
    shipped; best by MNIST test accuracy). Staff also get each architecture's newest fresh candidate,
    whose ``status`` ("candidate") marks it."""
    chosen: dict[str, ModelVersion] = {}
    vetted = ModelVersion.objects.vetted().order_by(F("test_accuracy").desc(nulls_last=True), "-created_at")
    for version in vetted.exclude(arch=main.ref.arch):
        chosen.setdefault(version.arch, version)
    picks = list(chosen.values())
    if staff:
        fresh: dict[str, ModelVersion] = {}
        candidates = ModelVersion.objects.usable().filter(activated_at__isnull=True, shipped=False)
        for version in candidates.exclude(pk=main.ref.id).order_by("-created_at", "-id"):
            fresh.setdefault(version.arch, version)
        picks += [v for v in fresh.values() if v.pk not in {p.pk for p in picks}]
    models = [main]
    for version in picks:
        try:
            models.append(registry.for_version(version))
        except ApplicationError:
            log.warning("model version %s left out of the comparison: cannot be loaded", version.pk)
    return models


def _store(decoded: DecodedImage, tensor: torch.Tensor, answer: ModelAnswer, latency_ms: float,
           client: Client, key_digest: str) -> Prediction:
    day = timezone.now()
    name = f"drawings/{day:%Y/%m/%d}/{uuid.uuid4().hex}.{decoded.extension}"
    pixels = (tensor.squeeze().clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
    user = client.user if client.user is not None and client.user.is_authenticated else None
    # Six decimals are stored; the confidence is the answer's own stored probability, so the two agree.
    probabilities = [round(p, 6) for p in answer.probabilities]
    saved = default_storage.save(name, ContentFile(decoded.data))
    try:
        return Prediction.objects.create(
            image=saved,
            input_pixels=pixels,
            input_sha256=hashlib.sha256(pixels).hexdigest(),
            probabilities=probabilities,
            digit=answer.digit,
            confidence=probabilities[answer.digit],
            model_version_id=answer.model.ref.id,
            latency_ms=latency_ms,
            source=client.source,
            user=user,
            session_key=client.session_key or "",
            client_ip=client.ip,
            label_key_digest=key_digest,
        )
    except BaseException:
        default_storage.delete(saved)  # no orphan file when the row cannot be written
        raise


def prediction_create(
    *,
    image: DecodedImage,
    client: Client,
    model_version_id: int | None = None,
    compare: bool = False,
    replaces: int | None = None,
) -> PredictionOutcome:
    """Recognize one drawing, store it with the answer, optionally answer with other models too.

    ``replaces`` names the client's previous prediction of the same, still growing drawing: once the
    new one is stored, that one is removed if it belongs to this client and nobody has labelled it.
    """
    started = time.perf_counter()
    tensor = _prepare(image)
    model = _model_for(model_version_id, staff=_is_staff(client))
    probabilities = model.probabilities(tensor.unsqueeze(0))[0].tolist()
    answer = ModelAnswer(model=model, probabilities=probabilities)
    latency_ms = (time.perf_counter() - started) * 1000
    metrics.prediction(version=model.ref.id, seconds=latency_ms / 1000)
    label_key, digest = new_label_key()
    prediction = _store(image, tensor, answer, latency_ms, client, digest)
    if replaces is not None:
        _remove_superseded(replaces, client)
    if model_version_id is None:  # answered by the active version: the candidates in shadow answer it too
        shadow_submit([(prediction.pk, tensor)])
    comparisons: list[ModelAnswer] = []
    if compare:
        batch = tensor.unsqueeze(0)
        comparisons = [
            ModelAnswer(model=m, probabilities=(probabilities if m is model else m.probabilities(batch)[0].tolist()))
            for m in _comparison_models(model, staff=bool(client.user and client.user.is_staff))
        ]
    return PredictionOutcome(prediction=prediction, tensor=tensor, model=model, label_key=label_key,
                             comparisons=comparisons)


def _remove_superseded(pk: int, client: Client) -> None:
    owned = Q(session_key=client.session_key) if client.session_key else Q(pk__in=[])
    if client.user is not None and client.user.is_authenticated:
        owned |= Q(user=client.user)
    # Never one somebody labelled, even when that label does not count (yet).
    superseded = Prediction.objects.filter(owned, pk=pk, label__isnull=True, not_a_digit=False,
                                           labels__isnull=True).first()
    if superseded is not None:
        name = superseded.image.name
        superseded.delete()
        transaction.on_commit(lambda: default_storage.delete(name))


def prediction_create_batch(
    *, images: list[DecodedImage], client: Client, model_version_id: int | None = None
) -> list[PredictionOutcome]:
    """All or nothing: every drawing is checked before any is stored."""
    started = time.perf_counter()
    tensors = [_prepare(image, index=i) for i, image in enumerate(images)]
    model = _model_for(model_version_id, staff=_is_staff(client))
    probabilities = model.probabilities(torch.stack(tensors)).tolist()
    latency_ms = (time.perf_counter() - started) * 1000 / max(len(images), 1)
    metrics.prediction(version=model.ref.id, seconds=latency_ms / 1000, count=len(images))
    outcomes = []
    stored: list[Prediction] = []
    try:
        with transaction.atomic():
            for image, tensor, probs in zip(images, tensors, probabilities):
                label_key, digest = new_label_key()
                prediction = _store(image, tensor, ModelAnswer(model, probs), latency_ms, client, digest)
                stored.append(prediction)
                outcomes.append(PredictionOutcome(prediction=prediction, tensor=tensor, model=model,
                                                  label_key=label_key))
            if model_version_id is None:
                shadow_submit([(o.prediction.pk, o.tensor) for o in outcomes])
    except BaseException:
        for prediction in stored:
            default_storage.delete(prediction.image.name)
        raise
    return outcomes


def prediction_label(
    *,
    prediction: Prediction,
    label: Any,
    by: AbstractBaseUser | AnonymousUser | None,
    via: str = Label.Via.ACCOUNT,
    giver: str = "",
    client_ip: str | None = None,
) -> Prediction:
    """Record a person's digit for a prediction, given from ``client_ip`` (``classifier.labels``: a trusted
    source's label overrides visitors'; a visitor's label is recorded and shown, and trains only as
    LABELS_TRAIN_TRUST allows); the prediction with its effective label and its trust."""
    label_record(prediction=prediction, value=label_value(label, allow_not_a_digit=False), by=by, via=via,
                 giver=giver, client_ip=client_ip)
    return prediction
