"""Media in an S3-compatible bucket (MEDIA_STORAGE=s3): a real S3 server (moto's standalone server) on
127.0.0.1, started here; no patched client."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.support.s3 import BUCKET, bucket, s3_media, s3_options, s3_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parent.parent


def _keys(client) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _png_of_a_seven() -> str:
    import base64
    import io

    from PIL import Image, ImageDraw

    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(60, 60), (220, 60), (120, 230)], fill=0, width=22)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.django_db
def test_checkpoints_and_drawings_live_in_the_bucket_and_checkpoints_are_cached_by_sha(
        s3_media, zero_logreg_checkpoint, mnist_settings, api_client):
    from classifier.inference import registry
    from classifier.lifecycle import model_version_activate, model_version_upload

    version = model_version_upload(data=zero_logreg_checkpoint, name="zero")
    model_version_activate(version=version, by=None, reason="served from the bucket", force=True)
    assert version.checkpoint.name in _keys(s3_media)
    assert not (Path(mnistsite_media()) / version.checkpoint.name).exists()  # nothing on the local disk

    response = api_client.post("/api/predict/", {"image": _png_of_a_seven()}, format="json")
    assert response.status_code == 200, response.content
    from classifier.models import Prediction

    drawing = Prediction.objects.get(pk=response.json()["id"]).image.name
    assert drawing in _keys(s3_media)

    cached = Path(s3_media_cache()) / f"{version.sha256}.pt"
    assert cached.is_file() and cached.stat().st_size == len(zero_logreg_checkpoint)

    # A damaged cached copy is noticed (sha256), dropped and fetched again from the bucket.
    cached.write_bytes(b"not a checkpoint")
    registry.clear()
    assert api_client.post("/api/predict/", {"image": _png_of_a_seven()}, format="json").status_code == 200
    assert cached.read_bytes() == zero_logreg_checkpoint


def mnistsite_media() -> str:
    from django.conf import settings

    return settings.MEDIA_ROOT


def s3_media_cache() -> str:
    from django.conf import settings

    return str(settings.CHECKPOINT_CACHE_DIR)


@pytest.mark.django_db
def test_a_new_checkpoint_never_replaces_a_stored_one(s3_media):
    from classifier.checkpoints import checkpoint_store
    from engine.checkpoint import make_checkpoint
    from engine.nets import build_model

    checkpoint = make_checkpoint(model=build_model("logreg"), arch="logreg", config={}, metrics={})
    first, _ = checkpoint_store(name="checkpoints/runs/run-1-logreg.pt", checkpoint=checkpoint)
    second, _ = checkpoint_store(name="checkpoints/runs/run-1-logreg.pt", checkpoint=checkpoint)
    assert first != second and {first, second} <= _keys(s3_media)


@pytest.mark.django_db
def test_move_media_copies_a_one_box_site_into_the_bucket_and_checks_every_row(
        settings, tmp_path, zero_logreg_checkpoint, mnist_settings, api_client, bucket, s3_server):
    from classifier.lifecycle import model_version_activate, model_version_upload
    from classifier.models import Prediction

    # A one-box site: media on the local disk.
    local = tmp_path / "media"
    shutil.copytree(Path(settings.MEDIA_ROOT) / "checkpoints" / "shipped", local / "checkpoints" / "shipped")
    settings.MEDIA_ROOT = str(local)
    version = model_version_upload(data=zero_logreg_checkpoint, name="zero")
    model_version_activate(version=version, by=None, reason="one box", force=True)
    ids = [api_client.post("/api/predict/", {"image": _png_of_a_seven()}, format="json").json()["id"]
           for _ in range(3)]
    (local / "datasets" / "MNIST" / "raw").mkdir(parents=True)
    (local / "datasets" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"labels")
    (local / "checkpoints" / ".cnn.pt.x1.tmp").write_bytes(b"half a file")

    # The same rows, the storage switched to the bucket.
    settings.STORAGES = {**settings.STORAGES,
                         "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": s3_options(s3_server)}}
    settings.MEDIA_STORAGE = "s3"
    with pytest.raises(CommandError, match="8 row"):  # 4 shipped and 1 uploaded checkpoint, 3 drawings
        call_command("move_media", "--from", str(local), "--verify-only", verbosity=0)
    call_command("move_media", "--from", str(local), verbosity=0)
    keys = _keys(bucket)
    assert version.checkpoint.name in keys
    assert {p.image.name for p in Prediction.objects.filter(pk__in=ids)} <= keys
    assert "datasets/MNIST/raw/t10k-labels-idx1-ubyte.gz" in keys  # where workers elsewhere find MNIST
    assert not any(".tmp" in key for key in keys)
    call_command("move_media", "--from", str(local), verbosity=0)  # again: nothing copied twice, all checked

    # A row whose file went missing is named, and the command fails.
    bucket.delete_object(Bucket=BUCKET, Key=Prediction.objects.get(pk=ids[0]).image.name)
    with pytest.raises(CommandError, match="1 row"):
        call_command("move_media", "--from", str(local), "--verify-only", verbosity=0)


def test_object_storage_settings_come_from_the_environment():
    env = {**os.environ, "MEDIA_STORAGE": "s3", "MEDIA_S3_BUCKET": "site-media", "MEDIA_S3_REGION": "eu-central-1",
           "MEDIA_S3_ENDPOINT_URL": "http://127.0.0.1:9", "DJANGO_SETTINGS_MODULE": "mnistsite.settings"}
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "o = s.STORAGES['default']['OPTIONS']; "
            "print(s.STORAGES['default']['BACKEND'], o['bucket_name'], o['region_name'], o['file_overwrite'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["storages.backends.s3.S3Storage", "site-media", "eu-central-1", "False"], out.stderr
    env.pop("MEDIA_S3_BUCKET")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "MEDIA_S3_BUCKET" in out.stderr


@pytest.mark.django_db
def test_staff_download_checkpoints_and_drawings_from_the_bucket(s3_media, zero_logreg_checkpoint, mnist_settings,
                                                                  api_client, client, staff_user, settings):
    from classifier.lifecycle import model_version_activate, model_version_upload
    from classifier.models import Prediction

    version = model_version_upload(data=zero_logreg_checkpoint, name="zero")
    model_version_activate(version=version, by=None, reason="served from the bucket", force=True)
    made = api_client.post("/api/predict/", {"image": _png_of_a_seven()}, format="json").json()
    drawing = Prediction.objects.get(pk=made["id"]).image.name
    media = "/" + settings.MEDIA_URL.strip("/") + "/"
    urls = {f"{media}{version.checkpoint.name}": zero_logreg_checkpoint, f"{media}{drawing}": None}
    for url in urls:
        assert client.get(url).status_code == 404  # anonymous: as if there were no such file
    client.force_login(staff_user)
    for url, expected in urls.items():
        response = client.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content)
        assert body == expected if expected is not None else body.startswith(b"\x89PNG")
