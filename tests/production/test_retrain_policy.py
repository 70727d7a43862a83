"""Automatic retraining, end to end in the production layout: two web processes (Granian), a Celery
worker, Celery beat and the shadow process (``manage.py shadow``) on a private Redis, the site's own
database.

Anonymous visitors' labels (each with its prediction's label key) are recorded but do not feed the loop:
beat's checks keep waiting. Trusted labels (a staff token) arrive through the API -> beat's check queues
a fine-tune of the active version -> the worker trains it and puts the result in shadow -> labelled
traffic accumulates through the API (visitors' labels on it are no evidence) -> the gate decides. First
the shadow labels say the candidate is wrong (it is kept as a candidate, with the gate's reason), then a
second cycle where they are the truth: it is promoted, and both web processes serve it within a second.
Every automatic step is in the audit logs with "policy" as its actor.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from PIL import Image

from tests.support.drawings import encode
from tests.support.http import post_json
from tests.support.processes import stop

from .conftest import REPO, Deployment, needs_postgresql

pytestmark = pytest.mark.slow

MIN_LABELS = 20  # labels that start a run
SHADOW_LABELS = 30  # labelled shadow drawings the gate is asked with
WAIT_S = 120

ZERO_VERSION = """
import io, torch
from classifier.lifecycle import model_version_activate, model_version_upload
from engine.checkpoint import make_checkpoint
from engine.nets import build_model
model = build_model("logreg")
with torch.no_grad():
    for p in model.parameters():
        p.zero_()
buffer = io.BytesIO()
torch.save(make_checkpoint(model=model, arch="logreg", config={}, metrics={}), buffer)
version = model_version_upload(data=buffer.getvalue(), name="zero")
model_version_activate(version=version, by=None, reason="a weak version for the policy to beat", force=True)
print(version.pk)
"""


def _png(pixels) -> str:
    image = Image.fromarray(pixels.numpy())  # an MNIST digit (uint8, 28x28): light ink on black
    buffer = io.BytesIO()
    image.resize((140, 140), Image.BILINEAR).save(buffer, "PNG")
    return encode(buffer.getvalue())


@contextmanager
def _celery(deployment: Deployment, *args: str, ready: str) -> Iterator[Callable[[], None]]:
    """``celery -A mnistsite ARGS`` with the deployment's settings, until the block ends; yields a function
    that waits until its log says ``ready`` (so the processes start side by side)."""
    log_path = deployment.folder / f"celery-{args[0]}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mnistsite", *args], cwd=REPO,
                                   env=deployment.env, stdout=out, stderr=subprocess.STDOUT)
    deployment.logs.append(log_path)

    def wait_ready() -> None:
        deadline = time.monotonic() + 90
        while ready not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, f"celery {args[0]} did not start"
            time.sleep(0.2)

    try:
        yield wait_ready
    finally:
        stop(process, timeout=20)


@contextmanager
def _shadow_process(deployment: Deployment) -> Iterator[Callable[[], None]]:
    """``python manage.py shadow`` (as ``make shadow`` and deploy/ start it) until the block ends."""
    log_path = deployment.folder / f"shadow-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "shadow"], cwd=REPO, env=deployment.env,
                                   stdout=out, stderr=subprocess.STDOUT)
    deployment.logs.append(log_path)

    def wait_ready() -> None:
        deadline = time.monotonic() + 90
        while "shadow process" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "the shadow process did not start"
            time.sleep(0.2)
        assert "CPU priority idle" in log_path.read_text(errors="replace")

    try:
        yield wait_ready
    finally:
        stop(process, timeout=20)
    assert "stopping:" in log_path.read_text(errors="replace")  # it stopped cleanly on SIGTERM


def _wait(what: str, probe, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Poller:
    """Asks every web process for a prediction every 100 ms and notes which version answered, and when."""

    def __init__(self, bases: list[str], image: str) -> None:
        self.bases, self.image = bases, image
        self.seen: dict[str, list[tuple[float, int]]] = {base: [] for base in bases}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base,), daemon=True) for base in bases]

    def _run(self, base: str) -> None:
        while not self._stop.is_set():
            status, body = post_json(f"{base}/api/predict/", {"image": self.image})
            if status == 200:
                self.seen[base].append((time.time(), body["model_version"]["id"]))
            self._stop.wait(0.1)

    def __enter__(self) -> "Poller":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(35)

    def first_served(self, base: str, version: int) -> float | None:
        return next((at for at, seen in self.seen[base] if seen == version), None)


@needs_postgresql
def test_the_policy_retrains_shadows_and_promotes_by_itself(deployment, mnist_root, mnist_test):
    deployment.env.update({
        "MNIST_ROOT": str(mnist_root),
        "PREDICT_THROTTLE": "off",
        "RETRAIN_POLICY_MIN_LABELS": str(MIN_LABELS),
        "RETRAIN_POLICY_SHADOW_MIN_LABELS": str(SHADOW_LABELS),
        "RETRAIN_POLICY_INTERVAL_SECONDS": "1",
        "RETRAIN_POLICY_RUN_OPTIONS": json.dumps({"epochs": 1, "mnist_limit": 3000, "val_size": 1000,
                                                   "extra_repeat": 1}),
        "TRAINING_TORCH_THREADS": "1",
        "TRAINING_HEARTBEAT_SECONDS": "1",
        # The shadow process looks even while this machine is busy (it runs the whole suite meanwhile);
        # skipping looks under load is tested on its own (tests/classifier/test_shadow.py).
        "SHADOW_MAX_BUSY": "1.0",
    })
    # beat's interval is the database's (migrate seeded the default): as staff set it in the admin
    deployment.shell("from training.policy_schedule import policy_interval_set\npolicy_interval_set(seconds=1)")
    zero = int(deployment.shell(ZERO_VERSION).splitlines()[-1])
    staff = deployment.staff_token()
    q = deployment.query

    def send(bases: list[str], first: int, count: int, labels, *, trusted: bool = True) -> list[int]:
        """Draw MNIST test digits through the API (alternating processes) and label each: with the staff
        token (trusted), or as the anonymous visitor who drew it, with its label key."""
        ids = []
        for i in range(first, first + count):
            base = bases[i % len(bases)]
            status, reply = post_json(f"{base}/api/predict/", {"image": _png(mnist_test.images[i])})
            assert status == 200, reply
            value = labels(i, reply)
            if trusted:
                status, body = post_json(f"{base}/api/predictions/{reply['id']}/label/", {"label": value}, token=staff)
            else:
                status, body = post_json(f"{base}/api/predictions/{reply['id']}/label/",
                                         {"label": value, "label_key": reply["label_key"]})
            assert status == 200, body
            ids.append(reply["id"])
        return ids

    def policy_run(after: int) -> tuple[int, int]:
        """The next automatic run after run id ``after``, once it succeeded and its version is in shadow."""
        def probe():
            rows = q("SELECT r.id, r.status, r.error, v.id, v.shadow_since FROM training_trainingrun r "
                     "LEFT JOIN classifier_modelversion v ON v.id = r.result_version_id "
                     "WHERE r.trigger = 'policy' AND r.id > %s ORDER BY r.id", after)
            if rows and rows[0][1] in ("failed", "cancelled"):
                pytest.fail(f"automatic run {rows[0][0]} {rows[0][1]}: {rows[0][2]}")
            if rows and rows[0][1] == "succeeded" and rows[0][4] is not None:
                return rows[0][0], rows[0][3]
            return None
        return _wait("an automatic run and its version in shadow", probe)

    def policy_event(action: str, run: int) -> tuple:
        return _wait(f"the policy to record '{action}'", lambda: q(
            "SELECT actor, reason FROM training_retrainpolicyevent WHERE action = %s AND run_id = %s", action, run))

    started = time.monotonic()
    with ExitStack() as stack:
        celery = [
            stack.enter_context(_celery(deployment, "worker", "--pool", "solo", "--concurrency", "1", "--queues",
                                        "training", "--without-gossip", "--without-mingle", "--hostname",
                                        f"policy-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "info", ready="ready.")),
            stack.enter_context(_celery(deployment, "beat", "--schedule", str(deployment.folder / "beat-schedule"),
                                        "--loglevel", "info", ready="beat: Starting")),
            stack.enter_context(_shadow_process(deployment)),
        ]
        web = [stack.enter_context(deployment.serve("http", "--workers", "1")) for _ in range(2)]
        for wait_ready in celery:  # and the shadow process
            wait_ready()

        print(f"processes up after {time.monotonic() - started:.0f} s")
        # ---- visitors' labels, however many, start nothing: every drawing "is an 8"
        checks = q("SELECT COUNT(*) FROM training_retrainpolicyevent")[0][0]
        send(web, 300, MIN_LABELS + 5, lambda i, reply: 8, trusted=False)
        sent = q("SELECT last_checked_at FROM training_retrainpolicy") or [(None,)]
        later = _wait("a check after them", lambda: [row for row in q(
            "SELECT last_checked_at, last_outcome FROM training_retrainpolicy") if row[0] != sent[0][0]])
        assert f"waiting for {MIN_LABELS} more labels" in later[0][1]  # they counted for nothing
        assert q("SELECT COUNT(*) FROM training_retrainpolicyevent")[0][0] == checks
        assert q("SELECT COUNT(*) FROM classifier_prediction WHERE label = 8 AND label_trust = 'visitor'")[0][0] \
            == MIN_LABELS + 5  # recorded, as visitors' labels

        # ---- cycle 1: enough trusted labels -> a run -> shadow -> the shadow labels say it is wrong -> kept
        truth = lambda i, reply: int(mnist_test.labels[i])  # noqa: E731
        send(web, 0, MIN_LABELS - 1, truth)
        _wait("a check one label short", lambda: "waiting for 1 more label" in (
            q("SELECT last_outcome FROM training_retrainpolicy") or [("",)])[0][0])
        assert q("SELECT COUNT(*) FROM training_trainingrun")[0][0] == 0
        send(web, MIN_LABELS - 1, 1, truth)
        run1, candidate1 = policy_run(0)
        time.sleep(1.0)  # every web process re-reads who is in shadow within MODEL_REFRESH_SECONDS
        send(web, 100, SHADOW_LABELS + 6, lambda i, reply: reply["digit"])  # "the active version was right"
        kept = policy_event("kept", run1)
        assert kept[0][0] == "policy" and "significantly worse" in kept[0][1] and "shadow traffic" in kept[0][1]
        assert q("SELECT status, shadow_since IS NULL FROM classifier_modelversion WHERE id = %s",
                 candidate1) == [("candidate", True)]
        assert "Retraining policy: not promoted" in q("SELECT notes FROM classifier_modelversion WHERE id = %s",
                                                      candidate1)[0][0]
        assert q("SELECT id FROM classifier_modelversion WHERE status = 'active'") == [(zero,)]
        shadow_answers = q("SELECT COUNT(*) FROM classifier_shadowprediction WHERE version_id = %s", candidate1)[0][0]
        assert shadow_answers >= SHADOW_LABELS

        print(f"cycle 1 settled after {time.monotonic() - started:.0f} s")
        # ---- cycle 2: those labels start the next run; true shadow labels -> promoted, served everywhere
        run2, candidate2 = policy_run(run1)
        time.sleep(1.0)
        with Poller(web, _png(mnist_test.images[9000])) as poller:
            send(web, 200, SHADOW_LABELS + 6, truth)
            promoted = policy_event("promoted", run2)
            _wait("both web processes to serve the promoted version, a few times over", lambda: all(
                len([at for at, seen in poller.seen[base] if seen == candidate2]) >= 5 for base in web), timeout=15)
        switched_at = q("SELECT at FROM classifier_lifecycleevent WHERE action = 'promote' AND to_version_id = %s",
                        candidate2)[0][0].timestamp()
        delays = {base: poller.first_served(base, candidate2) - switched_at for base in web}
        print(f"promoted version served after {', '.join(f'{d:.2f} s' for d in delays.values())} (two processes)")
        assert all(delay < 1.0 for delay in delays.values()), delays
        for base in web:  # never the old version again once the new one answered
            first = poller.first_served(base, candidate2)
            assert {version for at, version in poller.seen[base] if at > first} == {candidate2}
        assert promoted[0][0] == "policy" and "significantly better" in promoted[0][1]

    # ---- the audit logs: every automatic step, by "policy"
    lifecycle = q("SELECT action, actor, by_id, to_version_id, run_id FROM classifier_lifecycleevent "
                  "WHERE to_version_id IN (%s, %s) ORDER BY id", candidate1, candidate2)
    assert [row[:2] for row in lifecycle] == [
        ("register", "policy"), ("shadow", "policy"), ("unshadow", "policy"),
        ("register", "policy"), ("shadow", "policy"), ("promote", "policy")]
    assert {row[2] for row in lifecycle} == {None}
    policy = q("SELECT action, actor, run_id FROM training_retrainpolicyevent ORDER BY id")
    assert policy[:6] == [("queued", "policy", run1), ("shadow", "policy", run1), ("kept", "policy", run1),
                          ("queued", "policy", run2), ("shadow", "policy", run2), ("promoted", "policy", run2)]
    assert q("SELECT COUNT(*) FROM training_trainingrun WHERE trigger = 'policy' AND id <= %s", run2)[0][0] == 2
    assert not [line for line in deployment.log_problems() if "Traceback" in line]
