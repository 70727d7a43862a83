"""A real S3-compatible server (moto's standalone server) on 127.0.0.1 for the object-storage tests, and
the site's media storage pointed at a bucket on it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import free_port, stop, wait_for_port

BUCKET = "mnistsite-media"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(executable).exists():
        pytest.fail("moto_server is not installed (pip install -r requirements.txt)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        wait_for_port(port, process, timeout=60, name="moto_server", log=log.read_text)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def s3_options(endpoint: str) -> dict:
    return {"bucket_name": BUCKET, "location": "", "endpoint_url": endpoint, "region_name": "us-east-1",
            "access_key": "testing", "secret_key": "testing", "default_acl": None, "querystring_auth": True,
            "file_overwrite": False}


@pytest.fixture
def bucket(s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def s3_media(settings, bucket, s3_server, tmp_path):
    """The site's media storage is the bucket; this process's checkpoint cache is a fresh folder."""
    settings.STORAGES = {**settings.STORAGES,
                         "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": s3_options(s3_server)}}
    settings.MEDIA_STORAGE = "s3"
    settings.CHECKPOINT_CACHE_DIR = tmp_path / "checkpoint-cache"
    return bucket
