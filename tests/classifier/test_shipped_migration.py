"""Migration 0005: the retrained shipped checkpoints join an existing registry; the new flagship
takes over only from the previous shipped flagship; a fresh database is left as 0002 made it."""
import importlib

import pytest
from django.apps import apps
from django.conf import settings

from classifier.models import LifecycleEvent, ModelVersion
from engine.checkpoint import sha256_of

migration = importlib.import_module("classifier.migrations.0005_register_retrained_shipped_models")
SHIPPED = [a for a in migration.SHIPPED if (settings.SHIPPED_CHECKPOINTS_DIR / f"{a}.pt").exists()]


def shipped_sha(arch: str) -> str:
    return sha256_of(settings.SHIPPED_CHECKPOINTS_DIR / f"{arch}.pt")


def old_registry(*, active_sha: str) -> ModelVersion:
    """A database as 0002 left it before the retrain: the previous shipped files as version 1."""
    ModelVersion.objects.all().delete()
    active = None
    for arch in SHIPPED:
        sha = active_sha if arch == "cnn" else f"{arch:0<8}" + "0" * 56
        row = ModelVersion.objects.create(
            name=arch, version=1, arch=arch, checkpoint=f"checkpoints/shipped/{arch}-old.pt", sha256=sha,
            status="active" if arch == "cnn" else "candidate",
            notes="Shipped with the code; trained from scratch on MNIST with the recipe in its training config.",
        )
        active = row if arch == "cnn" else active
    return active


@pytest.mark.django_db
def test_fresh_database_is_left_alone():
    before = list(ModelVersion.objects.values_list("pk", "status", "sha256"))
    assert ModelVersion.objects.filter(sha256=shipped_sha("cnn"), status="active").exists()  # 0002 did it
    migration.register(apps, None)
    assert list(ModelVersion.objects.values_list("pk", "status", "sha256")) == before
    assert not LifecycleEvent.objects.filter(reason=migration.REASON).exists()


@pytest.mark.django_db
def test_old_registry_gets_the_new_files_and_the_new_flagship_becomes_active():
    old = old_registry(active_sha=migration.PREVIOUS_FLAGSHIP)
    migration.register(apps, None)
    for arch in SHIPPED:
        row = ModelVersion.objects.get(sha256=shipped_sha(arch))
        assert row.name == arch and row.version == 2 and row.parent.version == 1
        assert row.checkpoint.name.startswith("checkpoints/shipped/") and row.checkpoint.storage.exists(row.checkpoint.name)
        assert row.test_accuracy is not None and row.shipped
    new = ModelVersion.objects.get(sha256=shipped_sha("cnn"))
    old.refresh_from_db()
    assert new.status == "active" and new.activated_at is not None and old.status == "candidate"
    switch = LifecycleEvent.objects.get(action="activate", to_version=new)
    assert switch.from_version == old and switch.reason
    assert LifecycleEvent.objects.filter(action="register").count() == len(SHIPPED)
    # a second run changes nothing
    count = ModelVersion.objects.count()
    migration.register(apps, None)
    assert ModelVersion.objects.count() == count
    assert LifecycleEvent.objects.filter(action="activate").count() == 1


@pytest.mark.django_db
def test_a_site_that_moved_on_keeps_its_active_model():
    mine = old_registry(active_sha="f" * 64)
    migration.register(apps, None)
    mine.refresh_from_db()
    assert mine.status == "active"
    assert ModelVersion.objects.get(sha256=shipped_sha("cnn")).status == "candidate"
    assert not LifecycleEvent.objects.filter(action="activate").exists()


@pytest.mark.django_db
def test_reversing_gives_the_activation_back():
    old = old_registry(active_sha=migration.PREVIOUS_FLAGSHIP)
    migration.register(apps, None)
    migration.unregister(apps, None)
    old.refresh_from_db()
    assert old.status == "active"
    assert not ModelVersion.objects.filter(sha256=shipped_sha("cnn")).exists()
    assert ModelVersion.objects.count() == len(SHIPPED)
