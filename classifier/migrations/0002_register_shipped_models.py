"""Register the checkpoints shipped in training/shipped/ as model versions; the flagship cnn is active.

The files are copied into media storage (checkpoints/shipped/), so the registry only ever refers to
files it owns. Reversing removes those rows.
"""
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import migrations
from django.utils import timezone

from engine.checkpoint import load_checkpoint, sha256_of

SHIPPED = ("cnn", "lenet5", "mlp", "logreg")
FLAGSHIP = "cnn"
NOTE = "Shipped with the code; trained from scratch on MNIST with the recipe in its training config."


def register(apps, schema_editor):
    ModelVersion = apps.get_model("classifier", "ModelVersion")
    folder = Path(settings.SHIPPED_CHECKPOINTS_DIR)
    for arch in SHIPPED:
        path = folder / f"{arch}.pt"
        if not path.exists():
            continue
        data = path.read_bytes()
        digest = sha256_of(data)
        if ModelVersion.objects.filter(sha256=digest).exists():
            continue
        checkpoint = load_checkpoint(data)
        name = f"checkpoints/shipped/{arch}-{digest[:12]}.pt"
        if not default_storage.exists(name):
            name = default_storage.save(name, ContentFile(data))
        metrics = checkpoint.get("metrics", {})
        is_flagship = arch == FLAGSHIP and not ModelVersion.objects.filter(status="active").exists()
        ModelVersion.objects.create(
            name=arch,
            version=1,
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
            status="active" if is_flagship else "candidate",
            activated_at=timezone.now() if is_flagship else None,
            notes=NOTE,
        )


def unregister(apps, schema_editor):
    ModelVersion = apps.get_model("classifier", "ModelVersion")
    ModelVersion.objects.filter(notes=NOTE, version=1, predictions__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("classifier", "0001_initial")]
    operations = [migrations.RunPython(register, unregister)]
