"""The site on several machines, by settings alone: real hosts (network namespaces on one machine), each with
its own local media folder, so nothing can pass through the disk.

Two web hosts (``python -m mnistsite.serve http``), one WebSocket host (``... ws``) and two worker hosts
(``manage.py worker``) reach PostgreSQL, Redis and an S3-compatible server (moto's) over their links. The
release step (``migrate``) runs once, from outside. Then, through the public API: a fine-tune started on web
host A is trained by a worker host, its checkpoint lands in the bucket, both web hosts serve the new version
once it is active; a drawing made on A is labelled on B and seen in the admin on A; A's database link is cut
(its /readyz turns 503, B keeps answering) and restored; a worker host dies mid-run (the reaper fails the run,
the next one trains on the other worker).
"""
from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support import netns
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
BUCKET = "site-media"
WEB_PORT, WS_PORT = 8000, 8001
pytestmark = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="several machines share a PostgreSQL server (set DATABASE_URL to one)")


def _wait(what: str, check, *, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - keep trying until the deadline, then say what failed last
            result, last = None, exc
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last!r})")


class Site:
    """The hosts, the services on the bridge, and the environment every host shares."""

    def __init__(self, folder: Path) -> None:
        import boto3
        import psycopg
        import requests  # noqa: F401 - fail early with a clear error when missing

        self.folder = folder
        self.net = netns.Network()
        gateway = self.net.gateway
        self.links: dict[str, netns.Link] = {}
        self.processes: list[subprocess.Popen] = []

        # Services, listening on the bridge.
        redis_port, redis_password = free_port(), secrets.token_hex(16)
        self._service([shutil.which("redis-server"), "--port", str(redis_port), "--bind", gateway, "--save", "",
                       "--appendonly", "no", "--dir", str(folder), "--requirepass", redis_password], "redis")
        s3_port = free_port()
        self._service([str(Path(sys.executable).parent / "moto_server"), "-H", gateway, "-p", str(s3_port)], "s3")
        self.s3_url = f"http://{gateway}:{s3_port}"
        _wait("redis and the S3 server listen", lambda: all(
            _connects(gateway, port) for port in (redis_port, s3_port)), timeout=60)
        self.s3 = boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1",
                               aws_access_key_id="site", aws_secret_access_key="site-secret")
        self.s3.create_bucket(Bucket=BUCKET)

        suite = urlsplit(os.environ["DATABASE_URL"])
        self.db_name = f"mnistsite_hosts_{uuid.uuid4().hex[:10]}"
        self.admin_url = urlunsplit(suite._replace(path="/postgres"))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_url = urlunsplit(suite._replace(path=f"/{self.db_name}"))
        self.db_target = (suite.hostname or "127.0.0.1", suite.port or 5432)
        self.db_user = suite.username or "postgres"

        keep = {"PATH", "HOME", "LANG", "LC_ALL", "MNIST_ROOT", "PYTHONPATH", "TMPDIR"}
        self.env = {key: value for key, value in os.environ.items() if key in keep}
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "mnistsite.settings", "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(40), "ALLOWED_HOSTS": "*", "PYTHONUNBUFFERED": "1",
            "REDIS_URL": f"redis://:{redis_password}@{gateway}:{redis_port}/0",
            "MEDIA_STORAGE": "s3", "MEDIA_S3_BUCKET": BUCKET, "MEDIA_S3_ENDPOINT_URL": self.s3_url,
            "MEDIA_S3_REGION": "us-east-1", "MEDIA_S3_ACCESS_KEY_ID": "site", "MEDIA_S3_SECRET_ACCESS_KEY": "site-secret",
            "MODEL_REFRESH_SECONDS": "0.5", "TRAINING_HEARTBEAT_SECONDS": "1", "TRAINING_HEARTBEAT_TIMEOUT": "6",
            "TRAINING_REAP_SECONDS": "1", "RETRAIN_POLICY_ENABLED": "false", "SHADOW_WORKER": "process",
            "PREDICT_THROTTLE": "off", "WEB_WORKERS": "1",
        })

    def _service(self, command: list[str], name: str) -> None:
        with (self.folder / f"{name}.log").open("wb") as out:
            self.processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))

    # ------------------------------------------------------------------ hosts

    def host_env(self, name: str) -> dict[str, str]:
        """A host's own environment: its own media folder and its own link to the database."""
        link = self.links[name] = netns.Link(listen=self.net.gateway, target=self.db_target)
        media = self.folder / name / "media"
        media.mkdir(parents=True)
        url = f"postgres://{self.db_user}@{self.net.gateway}:{link.port}/{self.db_name}"
        return {**self.env, "DATABASE_URL": url, "MEDIA_ROOT": str(media),
                "CHECKPOINT_CACHE_DIR": str(self.folder / name / "cache"), "STATIC_ROOT": str(self.folder / "static")}

    def start(self, name: str, command: list[str]) -> netns.Host:
        host = self.net.add_host(name)
        host.start(command, env=self.host_env(name), cwd=REPO, log=self.folder / f"{name}.log")
        return host

    def manage(self, *args: str) -> str:
        """A one-off step, run once from outside the hosts (the release step, an operator's shell)."""
        env = {**self.env, "DATABASE_URL": self.db_url, "MEDIA_ROOT": str(self.folder / "release-media"),
               "STATIC_ROOT": str(self.folder / "static")}
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=240)
        assert done.returncode == 0, f"manage.py {args[0]}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.folder.glob("*.log")))

    def close(self) -> None:
        import psycopg

        self.net.close()
        for link in self.links.values():
            link.close()
        for process in self.processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


def _connects(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _drawing() -> str:
    from PIL import Image, ImageDraw

    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(70, 60), (210, 60), (130, 230)], fill=0, width=22)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def site(tmp_path):
    why = netns.available()
    if why:
        pytest.skip(why)
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    site = Site(tmp_path)
    try:
        yield site
    finally:
        site.close()


def _run_host_pid(run: dict, hosts: list[netns.Host]) -> netns.Host:
    pid = int(run["worker"].rsplit(":", 1)[1])
    owners = [host for host in hosts if pid in host.pids()]
    assert len(owners) == 1, f"the run's worker {run['worker']} is on none or several hosts"
    return owners[0]


def test_several_machines_share_a_site_through_settings_alone(site):
    try:
        _scenario(site)
    except BaseException:
        print(site.logs())  # every host's and service's log, to see where it went wrong
        raise


def _scenario(site: Site) -> None:
    import requests
    from websockets.sync.client import connect

    site.manage("migrate", "--noinput", "-v", "0")  # the release step: once, before any host starts
    site.manage("collectstatic", "--noinput", "-v", "0")
    token = site.manage("shell", "--no-imports", "-c",
                        "from django.contrib.auth import get_user_model\n"
                        "from rest_framework.authtoken.models import Token\n"
                        "user = get_user_model().objects.create_superuser('operator', password='op-pass-4521')\n"
                        "print(Token.objects.create(user=user).key)").split()[-1]
    staff = {"Authorization": f"Token {token}"}

    serve = [sys.executable, "-m", "mnistsite.serve"]
    web_a = site.start("web-a", [*serve, "http", "--host", "0.0.0.0", "--port", str(WEB_PORT), "--workers", "1"])
    web_b = site.start("web-b", [*serve, "http", "--host", "0.0.0.0", "--port", str(WEB_PORT), "--workers", "1"])
    ws = site.start("ws", [*serve, "ws", "--host", "0.0.0.0", "--port", str(WS_PORT)])
    workers = [site.start(name, [sys.executable, "manage.py", "worker", "--loglevel", "warning"])
               for name in ("worker-a", "worker-b")]
    a, b = (f"http://{host.address}:{WEB_PORT}" for host in (web_a, web_b))
    for url in (a, b):
        _wait(f"{url} ready", lambda url=url: requests.get(f"{url}/readyz", timeout=2).status_code == 200,
              timeout=120, every=0.5)

    # The dashboard's socket, on its own host, hears about runs that workers on other hosts train.
    with connect(f"ws://{ws.address}:{WS_PORT}/ws/training/", origin=f"http://{ws.address}:{WS_PORT}",
                 open_timeout=60) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "runs"

        # A fine-tune started on A is trained by a worker host; its checkpoint lands in the bucket.
        active = requests.get(f"{a}/api/model-status/", timeout=10).json()
        base = active["active"]["id"] if isinstance(active.get("active"), dict) else active["model_version"]["id"]
        spec = {"base_version": base, "epochs": 1, "mnist_limit": 3000, "val_size": 500, "name": "hosts"}
        started = requests.post(f"{a}/api/retrain/", json=spec, headers=staff, timeout=30)
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        run = _wait("the run succeeds", lambda: (r := requests.get(f"{b}/api/runs/{run_id}/", headers=staff,
                                                                   timeout=10).json())["status"] == "succeeded" and r,
                    timeout=240, every=1)
        assert _run_host_pid(run, workers) in workers
        version = run["result_version"]["id"]
        keys = {item["Key"] for item in site.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        assert any(key.startswith(f"checkpoints/runs/run-{run_id}-") for key in keys), keys
        assert not list((site.folder / run_host_folder(run, workers) / "media").rglob("*.pt")), "a checkpoint on a local disk"
        heard = []
        _wait("the dashboard host heard the run finish", lambda: heard.append(json.loads(socket.recv(timeout=5)))
              or any(m.get("type") == "lifecycle" and m["data"].get("run") == run_id
                     and m["data"].get("status") == "succeeded" for m in heard), timeout=30, every=0)

    # Made active on B, it is served by both web hosts within MODEL_REFRESH_SECONDS (and some slack).
    made = requests.post(f"{b}/api/models/{version}/activate/", headers=staff, timeout=60,
                         json={"reason": "the multi-host check", "force": True})
    assert made.status_code == 200, made.text
    for url in (a, b):
        _wait(f"{url} serves version {version}", lambda url=url: requests.post(
            f"{url}/api/predict/", json={"image": _drawing()}, timeout=10).json()["model_version"]["id"] == version,
            timeout=10)

    # A drawing made on A is labelled on B and seen in the admin on A.
    made = requests.post(f"{a}/api/predict/", json={"image": _drawing()}, timeout=10).json()
    labelled = requests.post(f"{b}/api/predictions/{made['id']}/label/",
                             json={"label": 7, "label_key": made["label_key"]}, timeout=10)
    assert labelled.status_code == 200, labelled.text
    admin = requests.Session()
    admin.get(f"{a}/admin/login/", timeout=10)
    logged_in = admin.post(f"{a}/admin/login/?next=/admin/", timeout=30, data={
        "username": "operator", "password": "op-pass-4521", "csrfmiddlewaretoken": admin.cookies["csrftoken"],
        "next": "/admin/"}, headers={"Referer": f"{a}/admin/login/"})
    assert logged_in.status_code == 200 and "Log out" in logged_in.text, logged_in.text[:500]
    page = admin.get(f"{a}/admin/classifier/label/?prediction__id__exact={made['id']}", timeout=10)
    if page.status_code == 404:  # no Label admin: the drawing's own page
        page = admin.get(f"{a}/admin/classifier/prediction/{made['id']}/change/", timeout=10)
    assert page.status_code == 200 and str(made["id"]) in page.text

    # A's database link is cut: A says it is not ready within seconds, B keeps answering; A recovers.
    site.links["web-a"].cut()
    not_ready = _wait("web-a's /readyz turns 503", lambda: (r := requests.get(f"{a}/readyz", timeout=5))
                      .status_code == 503 and r.json(), timeout=15)
    assert "database" in json.dumps(not_ready), not_ready
    assert requests.get(f"{b}/readyz", timeout=5).status_code == 200
    assert requests.post(f"{b}/api/predict/", json={"image": _drawing()}, timeout=10).status_code == 200
    site.links["web-a"].restore()
    _wait("web-a ready again", lambda: requests.get(f"{a}/readyz", timeout=5).status_code == 200, timeout=30)
    assert requests.post(f"{a}/api/predict/", json={"image": _drawing()}, timeout=10).status_code == 200

    # A worker host dies mid-run: the reaper fails the run; the next run trains on the other worker.
    long_run = requests.post(f"{a}/api/retrain/", headers=staff, timeout=30,
                             json={**spec, "epochs": 20, "mnist_limit": 60000, "name": "doomed"}).json()["id"]
    running = _wait("the long run is running", lambda: (r := requests.get(
        f"{a}/api/runs/{long_run}/", headers=staff, timeout=10).json())["status"] == "running" and r["worker"] and r,
        timeout=120, every=0.5)
    doomed = _run_host_pid(running, workers)
    doomed.kill()
    failed = _wait("the reaper fails the run", lambda: (r := requests.get(
        f"{b}/api/runs/{long_run}/", headers=staff, timeout=10).json())["status"] == "failed" and r,
        timeout=60, every=1)
    assert "presumed dead" in (failed["error"] or "") or "heartbeat" in (failed["error"] or ""), failed["error"]
    next_run = requests.post(f"{b}/api/retrain/", json={**spec, "name": "after"}, headers=staff, timeout=30).json()["id"]
    finished = _wait("the next run succeeds", lambda: (r := requests.get(
        f"{a}/api/runs/{next_run}/", headers=staff, timeout=10).json())["status"] == "succeeded" and r,
        timeout=240, every=1)
    survivor = [host for host in workers if host is not doomed][0]
    assert _run_host_pid(finished, workers) is survivor


def run_host_folder(run: dict, hosts: list[netns.Host]) -> str:
    return _run_host_pid(run, hosts).name
