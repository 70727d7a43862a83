"""Serving models in a web process: lazy loading, a per-process cache, hot switch and fallback.

Nothing is loaded at import time. A checkpoint is read the first time a version is needed (through
the one checkpoint loader, with its sha256 verified), kept per version in this process, and shared by
all requests. Every process re-reads which version is active at most every
``MODEL_REFRESH_SECONDS`` (default 0.5 s), so an activation anywhere reaches every process within a
second without a restart. A request holds on to the ``ServingModel`` it started with, so in-flight
requests finish on their version. If the active checkpoint cannot be loaded, the last good version
keeps serving and the failure is logged and reported by ``status()``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from django.conf import settings
from django.db.models import F
from torch import nn

from mnistsite import metrics
from mnistsite.errors import ApplicationError
from engine.checkpoint import CheckpointError, model_from_checkpoint
from engine.nets import inference_copy
from engine.serving import checkpoint_temperature, checkpoint_tta, predict_probabilities

from .checkpoints import checkpoint_read
from .models import ModelVersion

log = logging.getLogger(__name__)

# What a process reads of a version to serve it (and to describe it in answers).
_VERSION_FIELDS = ("id", "name", "version", "arch", "sha256", "checkpoint", "status", "test_accuracy", "metrics",
                   "activated_at", "shipped")


@dataclass(frozen=True)
class VersionRef:
    """What serving needs to know of a version, frozen when it was read."""

    id: int
    name: str
    version: int
    arch: str
    sha256: str
    checkpoint: str
    ref: dict[str, Any]  # ModelVersion.as_ref(): the version as JSON
    vetted: bool = True  # active once, or shipped with the code; False: a fresh candidate

    @classmethod
    def of(cls, version: ModelVersion) -> "VersionRef":
        return cls(id=version.pk, name=version.name, version=version.version, arch=version.arch, sha256=version.sha256, checkpoint=str(version.checkpoint),
                   ref=version.as_ref(), vetted=version.activated_at is not None or version.shipped)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.ref)


@dataclass
class ServingModel:
    ref: VersionRef
    module: nn.Module
    loaded_at: float = field(default_factory=time.time)
    temperature: float = 1.0  # the checkpoint's calibration (1 for checkpoints made without one)
    tta: str = "none"  # the checkpoint's test-time views (engine.serving.TTA_VIEWS)
    threads: int = 1  # torch threads of the calling thread while it predicts (INFERENCE_THREADS)

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``[N,1,28,28]`` floats in [0,1] -> ``[N,10]`` calibrated probabilities: softmax(logits / T),
        averaged over the checkpoint's test-time views."""
        # torch's thread count is per thread, and a thread that never set one starts from the last
        # count set in the process: a training run in this process must not decide it.
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return predict_probabilities(self.module, x, temperature=self.temperature, tta=self.tta)


@dataclass(frozen=True)
class Failure:
    """Why a checkpoint could not be loaded: ``public`` for anyone, ``detail`` for the log and staff."""

    at: float
    public: str
    detail: str

    @classmethod
    def of(cls, exc: Exception) -> "Failure":
        if isinstance(exc, CheckpointError) and not isinstance(exc, OSError):
            public = getattr(exc, "public", None) or str(exc)
        else:  # an OSError's text carries file paths
            public = "its checkpoint file cannot be read"
        return cls(at=time.monotonic(), public=public, detail=str(exc))


class ModelUnavailable(ApplicationError):
    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__("model_unavailable", message, detail, status=503)


class InferenceRegistry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[tuple[int, str], ServingModel] = {}
        self._failures: dict[tuple[int, str], Failure] = {}
        self._active: VersionRef | None = None
        self._active_checked = float("-inf")
        self._last_good: ServingModel | None = None

    # ---------------------------------------------------------------- loading
    def load(self, ref: VersionRef) -> ServingModel:
        """The loaded model for ``ref`` (cached); raises ``ModelUnavailable`` if it cannot be loaded."""
        key = (ref.id, ref.sha256)
        with self._lock:
            cached = self._models.get(key)
            if cached is not None:
                if cached.ref != ref:  # the same weights; what the registry says of them now (status, vetted)
                    cached = self._models[key] = replace(cached, ref=ref)
                return cached
            failed = self._failures.get(key)
            if failed and time.monotonic() - failed.at < settings.MODEL_RETRY_SECONDS:
                raise ModelUnavailable(f"model {ref.label} cannot be loaded: {failed.public}")
            try:
                module, temperature, tta = self._read(ref)
                serving = ServingModel(ref=ref, module=module, temperature=temperature, tta=tta,
                                       threads=max(1, int(settings.INFERENCE_THREADS)))
            except (CheckpointError, OSError, ValueError) as exc:
                failure = Failure.of(exc)
                self._failures[key] = failure
                log.error("cannot load model version %s (%s): %s", ref.id, ref.label, failure.detail,
                          extra={"version_id": ref.id})
                metrics.model_load(ok=False)
                raise ModelUnavailable(f"model {ref.label} cannot be loaded: {failure.public}") from None
            self._failures.pop(key, None)
            self._models[key] = serving
            log.info("loaded model version %s (%s, %s)", ref.id, ref.label, ref.arch, extra={"version_id": ref.id})
            metrics.model_load(ok=True)
            return serving

    def _read(self, ref: VersionRef) -> tuple[nn.Module, float, str]:
        """The inference module of a version's checkpoint, its serving temperature and test-time views."""
        checkpoint = checkpoint_read(name=ref.checkpoint, sha256=ref.sha256)
        if checkpoint["arch"] != ref.arch:
            raise CheckpointError(f"checkpoint is a {checkpoint['arch']!r}, the registry says {ref.arch!r}")
        model = inference_copy(model_from_checkpoint(checkpoint))
        return model, checkpoint_temperature(checkpoint), checkpoint_tta(checkpoint)

    # ---------------------------------------------------------------- the active version
    def active_ref(self, *, force: bool = False) -> VersionRef | None:
        now = time.monotonic()
        if force or now - self._active_checked >= settings.MODEL_REFRESH_SECONDS:
            row = ModelVersion.objects.active().only(*_VERSION_FIELDS).first()
            with self._lock:
                self._active = VersionRef.of(row) if row else None
                self._active_checked = now
        return self._active

    def serving(self) -> ServingModel:
        """The model that answers default predictions now: the active one, else the last good one.

        The last good one is the one this process served last, or (in a process that has served none)
        the most recently active version that loads. A version that was never active (a candidate
        nobody promoted) never serves by default.
        """
        active = self.active_ref()
        if active is not None:
            try:
                model = self.load(active)
            except ModelUnavailable:
                model = None
            if model is not None:
                with self._lock:
                    self._last_good = model
                return model
        fallback = self._last_good or self._previously_active(exclude=active.id if active else None)
        if fallback is None:
            raise ModelUnavailable(
                "No model can serve predictions: the active version cannot be loaded and no version that "
                "was active before can." if active else "No model version is active."
            )
        with self._lock:
            self._last_good = fallback
        return fallback

    def _previously_active(self, *, exclude: int | None) -> ServingModel | None:
        """The most recently active version (other than ``exclude``) that loads, if any."""
        rows = (
            ModelVersion.objects.usable().exclude(pk=exclude).filter(activated_at__isnull=False)
            .order_by(F("activated_at").desc(nulls_last=True), "-id")
        )
        for row in rows.only(*_VERSION_FIELDS)[:10]:
            try:
                return self.load(VersionRef.of(row))
            except ModelUnavailable:
                continue
        return None

    def for_version(self, version: ModelVersion) -> ServingModel:
        return self.load(VersionRef.of(version))

    # ---------------------------------------------------------------- reporting
    def status(self, *, staff: bool = False) -> dict[str, Any]:
        """What serves and why; ``staff`` adds the failure's full text (file paths and all)."""
        active = self.active_ref(force=True)
        serving: ServingModel | None
        error = detail = None
        try:
            serving = self.serving()
        except ModelUnavailable as exc:
            serving, error = None, exc.message
        if active is not None and (serving is None or serving.ref.id != active.id):
            failure = self._failures.get((active.id, active.sha256))
            if failure:
                error = f"model {active.label} cannot be loaded: {failure.public}"
                detail = failure.detail
        with self._lock:
            loaded = [m.ref.as_dict() for m in self._models.values()]
        return {
            "active": active.as_dict() if active else None,
            "serving": serving.ref.as_dict() if serving else None,
            "loaded": bool(active and serving and serving.ref.id == active.id),
            "healthy": bool(active and serving and serving.ref.id == active.id and error is None),
            "error": error,
            **({"error_detail": detail} if staff else {}),
            "loaded_versions": loaded,
        }

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._failures.clear()
            self._active = None
            self._active_checked = float("-inf")
            self._last_good = None


registry = InferenceRegistry()
