"""A machine without MNIST finds it in the media storage (a real S3 server here), downloads it when allowed
(from a real HTTP mirror on 127.0.0.1), or fails with the fix in its message."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest
from django.core.management import call_command

from tests.support.s3 import BUCKET, bucket, s3_media, s3_server  # noqa: F401 - fixtures

RAW = ("MNIST", "raw")


@pytest.fixture
def empty_root(settings, tmp_path):
    settings.MNIST_ROOT = tmp_path / "fresh-machine"
    settings.MNIST_DOWNLOAD = False
    settings.MNIST_MIRRORS = []
    return settings.MNIST_ROOT


def test_a_fresh_machine_without_mnist_is_told_how_to_fix_it(empty_root, db):
    from classifier.mnist_source import mnist_ensure
    from engine.data import MnistNotFoundError

    with pytest.raises(MnistNotFoundError) as raised:
        mnist_ensure()
    assert "MNIST_ROOT" in str(raised.value) and "--to-storage" in str(raised.value)
    assert "MNIST_DOWNLOAD=true" in str(raised.value)


def test_a_run_without_mnist_fails_with_the_fix_in_its_error(empty_root, settings, staff_user, shipped_versions,
                                                               django_capture_on_commit_callbacks):
    from training.models import TrainingRun
    from training.services import training_run_start

    settings.TRAINING_EXECUTOR = "inline"
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(spec={"arch": "logreg", "epochs": 1}, by=staff_user)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "MNIST_DOWNLOAD=true" in run.error and "--to-storage" in run.error


@pytest.mark.django_db
def test_workers_copy_mnist_from_the_bucket_checked_by_checksum(s3_media, mnist_root, empty_root, settings):
    from classifier.mnist_source import mnist_ensure, storage_name
    from engine.data import MNIST_RESOURCES, MnistNotFoundError, load_mnist

    settings.MNIST_ROOT = mnist_root  # the machine that has it uploads it once
    call_command("fetch_mnist", "--to-storage", "--mirror", "http://127.0.0.1:9/", verbosity=0)
    keys = {item["Key"] for item in s3_media.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {storage_name(name) for name in MNIST_RESOURCES} <= keys

    settings.MNIST_ROOT = empty_root  # a fresh worker
    assert mnist_ensure() == empty_root
    assert len(load_mnist(empty_root, "test")) == 10000

    # A damaged copy in the bucket is refused, not used.
    shutil.rmtree(empty_root)
    name = "t10k-labels-idx1-ubyte.gz"
    s3_media.put_object(Bucket=BUCKET, Key=storage_name(name), Body=b"\x1f\x8b not the labels")
    with pytest.raises(MnistNotFoundError, match="damaged"):
        mnist_ensure()
    assert not (empty_root.joinpath(*RAW) / name).exists()


def test_workers_may_download_it_when_allowed(empty_root, mnist_root, settings, db):
    from classifier.mnist_source import mnist_ensure
    from engine.data import load_mnist

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mnist_root.joinpath(*RAW)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.MNIST_DOWNLOAD = True
        settings.MNIST_MIRRORS = [f"http://127.0.0.1:{server.server_address[1]}/"]
        assert mnist_ensure() == empty_root
    finally:
        server.shutdown()
    assert len(load_mnist(empty_root, "train")) == 60000
