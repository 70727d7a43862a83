"""Register the retrained shipped checkpoints (writing habits, calibrated confidence) and make the new
flagship active where the old shipped flagship still is.

Like 0002, each file in training/shipped/ whose sha256 is not registered yet is copied into media
storage (checkpoints/shipped/) and gets one row, as the next version of its architecture's name.
The new cnn becomes active only if the active version is the previous shipped flagship: a site
that has moved on to a model of its own keeps it. On a fresh database 0002 has already registered
these very files (and made the cnn active), so this does nothing. Reversing removes the rows it
added (those without predictions) and gives the activation back to the previous flagship.
"""
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import migrations
from django.db.models import Max
from django.utils import timezone

from engine.checkpoint import load_checkpoint, sha256_of

SHIPPED = ("cnn", "lenet5", "mlp", "logreg")
FLAGSHIP = "cnn"
# sha256 of the flagship shipped before this one (registered by 0002 on older databases).
PREVIOUS_FLAGSHIP = "ab405bfdfd58dd379e2aa032bb703366b30d4f97c9ab304143e07ec1659b569c"
NOTE = (
    "Shipped with the code; trained from scratch on MNIST with writing habits synthesised from its glyphs "
    "(slashed zeros, flagged and based ones, crossed sevens) and a temperature fitted on the validation split."
)
REASON = (
    "Migration 0005: the retrained shipped flagship replaces the previous shipped flagship "
    "(better on real pen-drawn digits, calibrated confidence)."
)


def register(apps, schema_editor):
    ModelVersion = apps.get_model("classifier", "ModelVersion")
    LifecycleEvent = apps.get_model("classifier", "LifecycleEvent")
    folder = Path(settings.SHIPPED_CHECKPOINTS_DIR)
    flagship = None
    for arch in SHIPPED:
        path = folder / f"{arch}.pt"
        if not path.exists():
            continue
        data = path.read_bytes()
        digest = sha256_of(data)
        existing = ModelVersion.objects.filter(sha256=digest).first()
        if existing is not None:
            flagship = existing if arch == FLAGSHIP else flagship
            continue
        checkpoint = load_checkpoint(data)
        name = f"checkpoints/shipped/{arch}-{digest[:12]}.pt"
        if not default_storage.exists(name):
            name = default_storage.save(name, ContentFile(data))
        metrics = checkpoint.get("metrics", {})
        latest = ModelVersion.objects.filter(name=arch).aggregate(Max("version"))["version__max"] or 0
        parent = ModelVersion.objects.filter(name=arch, notes__startswith="Shipped with the code").order_by("-version").first()
        version = ModelVersion.objects.create(
            name=arch,
            version=latest + 1,
            arch=checkpoint["arch"],
            checkpoint=name,
            sha256=digest,
            num_parameters=checkpoint.get("num_parameters", 0),
            test_accuracy=metrics.get("test_accuracy"),
            per_class_accuracy=metrics.get("per_class_accuracy", []),
            confusion_matrix=metrics.get("confusion_matrix", []),
            metrics={k: v for k, v in metrics.items() if k not in ("per_class_accuracy", "confusion_matrix")},
            preprocessing=checkpoint.get("preprocessing", ""),
            data_fingerprint=checkpoint.get("data_fingerprint", ""),
            training_config={k: v for k, v in checkpoint.get("training", {}).items() if k != "history"},
            status="candidate",
            parent=parent,
            notes=NOTE,
            shipped=True,
        )
        LifecycleEvent.objects.create(action="register", to_version=version, from_version=parent, reason=NOTE)
        if arch == FLAGSHIP:
            flagship = version

    active = ModelVersion.objects.filter(status="active").first()
    if flagship is None or active is None or active.pk == flagship.pk or active.sha256 != PREVIOUS_FLAGSHIP:
        return
    active.status = "candidate"
    active.save(update_fields=["status"])
    flagship.status = "active"
    flagship.activated_at = timezone.now()
    flagship.save(update_fields=["status", "activated_at"])
    LifecycleEvent.objects.create(action="activate", to_version=flagship, from_version=active, reason=REASON)


def unregister(apps, schema_editor):
    ModelVersion = apps.get_model("classifier", "ModelVersion")
    LifecycleEvent = apps.get_model("classifier", "LifecycleEvent")
    added = ModelVersion.objects.filter(notes=NOTE).exclude(version=1)  # version 1: registered by 0002
    switch = LifecycleEvent.objects.filter(action="activate", reason=REASON, to_version__in=added).first()
    if switch is not None and switch.to_version.status == "active" and switch.from_version is not None:
        switch.to_version.status = "candidate"
        switch.to_version.save(update_fields=["status"])
        switch.from_version.status = "active"
        switch.from_version.save(update_fields=["status"])
    LifecycleEvent.objects.filter(to_version__in=added, reason__in=(NOTE, REASON)).delete()
    added.filter(predictions__isnull=True, status="candidate").delete()


class Migration(migrations.Migration):
    dependencies = [("classifier", "0004_prediction_label_key")]
    operations = [migrations.RunPython(register, unregister)]
