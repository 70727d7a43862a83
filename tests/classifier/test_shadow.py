"""Shadow evaluation: candidates answering live drawings in the background, their report, the gate."""
from __future__ import annotations

import io
import os
import time
from collections import namedtuple

import psutil
import pytest
import torch
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier import lifecycle, shadow
from classifier.shadow import answers
from classifier.inference import registry
from classifier.models import LifecycleEvent, ModelVersion, Prediction, ShadowPrediction
from classifier.promotion import Evidence, Requirement, gate_decide
from mnistsite.errors import ApplicationError
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode
from tests.support.registry import assert_error, fake_version

pytestmark = pytest.mark.django_db

PREDICT = "/api/predict/"


def shipped(name: str) -> ModelVersion:
    return ModelVersion.objects.get(name=name, version=1)


def shadow_url(version: ModelVersion) -> str:
    return f"/api/models/{version.pk}/shadow/"


@pytest.fixture(autouse=True)
def _fresh_shadow(settings):
    settings.SHADOW_WORKER = "thread"  # the one-process default; the process mode's tests say so
    shadow.shadow_reset()
    yield
    shadow.shadow_reset()


@pytest.fixture
def held_worker(monkeypatch, settings):
    """The process's worker with its thread held back: what the predict path queues stays queued, and the
    test processes it in its own thread (whose database transaction holds the rows)."""
    settings.MODEL_REFRESH_SECONDS = 0
    monkeypatch.setattr(shadow.ShadowWorker, "start", lambda self: None)
    return shadow.shadow_worker()


def drain(worker: shadow.ShadowWorker) -> list:
    items = []
    while not worker.queue.empty():
        items.append(worker.queue.get_nowait())
        worker.queue.task_done()
    return items


def predict(client, points=SEVEN):
    response = client.post(PREDICT, {"image": encode(canvas(points))}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


# ------------------------------------------------------------------ in and out of shadow, audited


def test_start_and_stop_are_audited_and_refused_when_they_make_no_sense(staff_user):
    logreg, cnn = shipped("logreg"), shipped("cnn")
    started = shadow.shadow_start(version=logreg, by=staff_user, reason="try it on live drawings")
    assert started.in_shadow and list(shadow.shadow_versions()) == [logreg]
    event = LifecycleEvent.objects.get(action="shadow")
    assert (event.to_version, event.by, event.actor, event.reason) == (logreg, staff_user, "", "try it on live drawings")
    assert event.get_action_display() == "entered shadow"

    with pytest.raises(ApplicationError) as again:
        shadow.shadow_start(version=logreg, by=staff_user)
    assert (again.value.code, again.value.status) == ("already_in_shadow", 409)
    with pytest.raises(ApplicationError) as active:
        shadow.shadow_start(version=cnn, by=staff_user)
    assert active.value.code == "not_a_candidate"

    stopped = shadow.shadow_stop(version=logreg, actor="policy", reason="enough")
    assert not stopped.in_shadow and not shadow.shadow_versions().exists()
    event = LifecycleEvent.objects.get(action="unshadow")
    assert event.by is None and event.actor == "policy" and event.get_action_display() == "left shadow"
    with pytest.raises(ApplicationError) as not_in:
        shadow.shadow_stop(version=logreg)
    assert not_in.value.code == "not_in_shadow"


def test_activation_ends_the_shadow(staff_user):
    logreg = shipped("logreg")
    shadow.shadow_start(version=logreg, by=staff_user)
    lifecycle.model_version_activate(version=logreg, by=staff_user, reason="go")
    assert not shadow.shadow_versions().exists()
    lifecycle.model_version_rollback(by=staff_user, reason="back")  # a candidate again, but not in shadow
    logreg.refresh_from_db()
    assert logreg.status == "candidate" and not logreg.in_shadow and not shadow.shadow_versions().exists()
    shadow.shadow_start(version=logreg, by=staff_user)  # it may enter again
    assert list(shadow.shadow_versions()) == [logreg]


# ------------------------------------------------------------------ the predict path


def test_shadow_answers_are_stored_beside_the_active_ones_and_never_change_the_reply(api_client, held_worker,
                                                                                       django_capture_on_commit_callbacks):
    before = predict(api_client)
    assert held_worker.queue.empty()  # nobody in shadow: nothing queued

    logreg = shipped("logreg")
    shadow.shadow_start(version=logreg, by=None)
    with django_capture_on_commit_callbacks(execute=True):
        replies = [predict(api_client, points) for points in (SEVEN, ONE, ZERO)]
    assert replies[0]["digit"] == before["digit"] == 7
    assert replies[0]["probabilities"] == before["probabilities"]
    assert set(replies[0]) == set(before) and replies[0]["model_version"]["name"] == "cnn"
    assert not ShadowPrediction.objects.exists()  # the reply never waited for the shadow

    items = drain(held_worker)
    assert [pk for pk, _ in items] == [r["id"] for r in replies]
    assert held_worker.process(items) == 3
    rows = {row.prediction_id: row for row in ShadowPrediction.objects.filter(version=logreg)}
    assert set(rows) == {r["id"] for r in replies}
    for reply in replies:
        row, stored = rows[reply["id"]], Prediction.objects.get(pk=reply["id"])
        assert stored.digit == reply["digit"] and stored.model_version.name == "cnn"  # the answer stays
        assert len(row.probabilities) == 10 and sum(row.probabilities) == pytest.approx(1, abs=1e-3)
        assert row.digit == max(range(10), key=row.probabilities.__getitem__)
        assert row.confidence == row.probabilities[row.digit]
    # the same input through logreg directly gives the same answer
    pixels = torch.frombuffer(bytearray(Prediction.objects.get(pk=replies[0]["id"]).input_pixels), dtype=torch.uint8)
    direct = registry.for_version(logreg).probabilities(pixels.reshape(1, 1, 28, 28).float() / 255)[0]
    assert int(direct.argmax()) == rows[replies[0]["id"]].digit
    # once only: a second pass over the same drawings stores nothing twice
    held_worker.process(items)
    assert ShadowPrediction.objects.count() == 3


def test_batch_predictions_and_two_candidates(api_client, held_worker, django_capture_on_commit_callbacks):
    logreg, mlp = shipped("logreg"), shipped("mlp")
    shadow.shadow_start(version=logreg)
    shadow.shadow_start(version=mlp)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/api/predict/batch/", {"images": [encode(canvas(SEVEN)), encode(canvas(ONE))]},
                                   format="json")
        assert response.status_code == 200, response.content
    assert held_worker.process(drain(held_worker)) == 4
    assert ShadowPrediction.objects.filter(version=mlp).count() == 2
    assert ShadowPrediction.objects.filter(version=logreg).count() == 2


def test_a_chosen_model_is_not_shadowed(api_client, held_worker, django_capture_on_commit_callbacks):
    shadow.shadow_start(version=shipped("logreg"))
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(PREDICT, {"image": encode(canvas(SEVEN)), "model": shipped("mlp").pk},
                                   format="json")
    assert response.status_code == 200 and held_worker.queue.empty()


def test_a_full_queue_drops_and_counts_and_the_request_is_unaffected(api_client, held_worker, settings,
                                                                      django_capture_on_commit_callbacks):
    shadow.shadow_reset()
    settings.SHADOW_QUEUE_SIZE = 2
    worker = shadow.shadow_worker()
    shadow.shadow_start(version=shipped("logreg"))
    with django_capture_on_commit_callbacks(execute=True):
        replies = [predict(api_client) for _ in range(5)]
    assert all(r["digit"] == 7 for r in replies)
    stats = worker.stats()
    assert (stats["submitted"], stats["dropped"], stats["queued"], stats["queue_size"]) == (2, 3, 2, 2)


def test_a_replaced_drawing_loses_its_shadow_answer_quietly(token_client, held_worker,
                                                            django_capture_on_commit_callbacks):
    shadow.shadow_start(version=shipped("logreg"))
    with django_capture_on_commit_callbacks(execute=True):
        first = predict(token_client)
        second = token_client.post(PREDICT, {"image": encode(canvas(SEVEN)), "replaces": first["id"]},
                                 format="json").json()
    assert not Prediction.objects.filter(pk=first["id"]).exists()
    assert held_worker.process(drain(held_worker)) == 1
    assert list(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == [second["id"]]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_worker_thread_answers_live_traffic(shipped_versions, api_client, settings):
    """The real thing: the worker's own thread and database connection, the request never waiting."""
    settings.MODEL_REFRESH_SECONDS = 0
    logreg = ModelVersion.objects.get(name="logreg", version=1)
    shadow.shadow_start(version=logreg)
    replies = [predict(api_client, points) for points in (SEVEN, ONE)]
    worker = shadow.shadow_worker()
    assert worker.join(30)
    deadline = time.monotonic() + 10
    while ShadowPrediction.objects.filter(version=logreg).count() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(ShadowPrediction.objects.filter(version=logreg).values_list("prediction_id", flat=True)) == {
        r["id"] for r in replies}
    assert worker.stats()["answered"] == 2 and worker.stats()["failed"] == 0


def test_starting_the_worker_shortens_the_thread_switch_interval():
    """While the worker runs Python code a request waits for the GIL at most SHADOW_SWITCH_INTERVAL."""
    import sys

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        worker = shadow.ShadowWorker(queue_size=4, batch_max=4, switch_interval=0.0005)
        worker.start()
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        sys.setswitchinterval(0.005)
        untouched = shadow.ShadowWorker(queue_size=4, batch_max=4, switch_interval=0.0)
        untouched.start()
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(before)


# ------------------------------------------------------------------ the shadow in a process of its own


@pytest.fixture
def process_mode(settings):
    settings.SHADOW_WORKER = "process"
    settings.MODEL_REFRESH_SECONDS = 0


def test_in_process_mode_the_request_path_does_nothing_for_the_shadow(api_client, process_mode,
                                                                      django_capture_on_commit_callbacks):
    shadow.shadow_start(version=shipped("logreg"))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        predict(api_client)
    assert callbacks == [] and answers._worker is None  # no queue, no thread, not even a callback


def test_the_poller_answers_the_newest_live_drawings_since_each_candidate_entered_shadow(api_client, process_mode):
    logreg, mlp = shipped("logreg"), shipped("mlp")
    poller = shadow.ShadowPoller(batch_max=3)
    before = predict(api_client)  # made before any shadow: never answered
    assert poller.poll() == 0
    shadow.shadow_start(version=logreg)
    first = [predict(api_client, points)["id"] for points in (SEVEN, ONE, ZERO, SEVEN, ONE)]
    chosen = api_client.post(PREDICT, {"image": encode(canvas(SEVEN)), "model": mlp.pk}, format="json").json()["id"]
    assert poller.poll() == 3  # the newest three of the five; the other two are left out (a sample)
    answered = set(ShadowPrediction.objects.values_list("prediction_id", flat=True))
    assert answered == set(first[2:]) and before["id"] not in answered and chosen not in answered
    assert poller.poll() == 0  # nothing new since the last look

    shadow.shadow_start(version=mlp)
    second = [predict(api_client, points)["id"] for points in (SEVEN, ZERO)]
    assert poller.poll() == 4  # both candidates answer the two new drawings
    assert set(ShadowPrediction.objects.filter(version=mlp).values_list("prediction_id", flat=True)) == set(second)
    stats = poller.stats()
    assert stats["answered"] == 7 and stats["failed"] == 0 and stats["cpu_ms"] > 0 and poller.looks == 4

    # the answer is the candidate's on the stored 28x28 input, exactly as the thread's would be
    row = ShadowPrediction.objects.get(version=logreg, prediction_id=second[0])
    pixels = torch.frombuffer(bytearray(Prediction.objects.get(pk=second[0]).input_pixels), dtype=torch.uint8)
    direct = registry.for_version(logreg).probabilities(pixels.reshape(1, 1, 28, 28).float() / 255)[0]
    assert row.probabilities == [round(p, 6) for p in direct.tolist()]

    shadow.shadow_stop(version=logreg)
    shadow.shadow_stop(version=mlp)
    predict(api_client)
    assert poller.poll() == 0 and poller.cursor is None


def test_the_poller_leaves_imported_drawings_and_other_versions_alone(api_client, process_mode):
    logreg = shipped("logreg")
    shadow.shadow_start(version=logreg)
    live = predict(api_client)["id"]
    imported = predict(api_client)["id"]
    Prediction.objects.filter(pk=imported).update(source=Prediction.Source.IMPORT)
    poller = shadow.ShadowPoller(batch_max=10)
    assert poller.poll() == 1
    assert list(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == [live]


def test_the_shadow_command_looks_and_reports(api_client, process_mode, monkeypatch, settings):
    from django.core.management import call_command

    from classifier.management.commands import shadow as command

    monkeypatch.setattr(command, "close_old_connections", lambda: None)  # keep the test's transaction
    settings.SHADOW_MAX_BUSY = 1.0  # look even while other tests keep this machine busy

    shadow.shadow_start(version=shipped("logreg"))
    ids = {predict(api_client)["id"], predict(api_client, ONE)["id"]}
    out = io.StringIO()
    call_command("shadow", "--looks", "1", "--priority", "normal", stdout=out)
    assert set(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == ids
    assert "CPU priority normal" in out.getvalue() and "1 looks (0 skipped, CPUs busy), 2 answers stored, 0 failed" in out.getvalue()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's (elsewhere: niceness 19)")
def test_the_shadow_process_runs_at_the_idle_cpu_priority():
    """Run in a child process: the priority is the process's own and cannot be raised again."""
    import subprocess
    import sys

    code = ("import os, django; django.setup(); from classifier.management.commands.shadow import lower_priority; "
            "print(lower_priority('idle')); print(os.sched_getscheduler(0) == os.SCHED_IDLE)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "mnistsite.settings"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["idle (SCHED_IDLE)", "True"]


CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
OwnTimes = namedtuple("OwnTimes", "user system children_user children_system")


def test_the_cpu_gauge_counts_what_others_keep_busy():
    readings = [  # (the machine's CPU seconds, all CPUs together; this process's own)
        (CpuTimes(10, 0, 0, 10, 0, 0, 0, 0, 0, 0), OwnTimes(0, 0, 0, 0)),
        (CpuTimes(11, 0, 0, 11, 0, 0, 0, 0, 0, 0), OwnTimes(0, 0, 0, 0)),  # 1 s busy of 2 s
        (CpuTimes(12, 0, 1, 11, 0, 0, 0, 0, 0, 0), OwnTimes(0.25, 0.25, 9, 9)),  # 2 s busy, 0.5 s our own
        (CpuTimes(13, 0, 1, 11.5, 0.5, 0, 0, 0, 1, 0), OwnTimes(0.5, 0.25, 9, 9)),  # guest is inside user; iowait idles
    ]
    machine = iter([times for times, _ in readings])
    own = iter([times for _, times in readings])
    gauge = shadow.CpuGauge(machine=lambda: next(machine), own=lambda: next(own))
    assert gauge.busy() is None  # the first reading has nothing to compare with
    assert gauge.busy() == pytest.approx(0.5)
    assert gauge.busy() == pytest.approx(0.75)  # children's CPU time is not this process's own
    assert gauge.busy() == pytest.approx(0.75 / 2)

    def unreadable():
        raise psutil.AccessDenied()

    blind = shadow.CpuGauge(machine=unreadable)
    assert blind.busy() is None and blind.busy() is None  # unknown, so the shadow looks


def test_the_cpu_gauge_reads_this_machine():
    gauge = shadow.CpuGauge()
    assert gauge.busy() is None
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # our own work, which the gauge leaves out
        sum(range(1000))
    busy = gauge.busy()
    assert busy is not None and 0.0 <= busy <= 1.0


def test_the_shadow_process_skips_looks_while_the_cpus_are_busy(api_client, process_mode, monkeypatch, settings):
    from django.core.management import call_command

    from classifier.management.commands import shadow as command

    monkeypatch.setattr(command, "close_old_connections", lambda: None)
    monkeypatch.setattr(shadow.CpuGauge, "busy", lambda self: 0.95)
    settings.SHADOW_MAX_BUSY = 0.8
    shadow.shadow_start(version=shipped("logreg"))
    predict(api_client)
    out = io.StringIO()
    call_command("shadow", "--looks", "2", "--priority", "normal", "--poll-seconds", "0.01", stdout=out)
    assert "0 looks (2 skipped, CPUs busy), 0 answers stored" in out.getvalue()
    assert not ShadowPrediction.objects.exists()


def test_the_shadow_process_keeps_looking_after_a_failed_look(api_client, process_mode, monkeypatch, settings, caplog):
    """The database away for a moment (or a checkpoint gone): logged once, and the next look works."""
    from django.core.management import call_command

    from classifier.management.commands import shadow as command

    monkeypatch.setattr(command, "close_old_connections", lambda: None)
    settings.SHADOW_MAX_BUSY = 1.0
    shadow.shadow_start(version=shipped("logreg"))
    reply = predict(api_client)
    real_poll, calls = shadow.ShadowPoller._poll, []

    def flaky(self):
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("the database went away")
        return real_poll(self)

    monkeypatch.setattr(shadow.ShadowPoller, "_poll", flaky)
    out = io.StringIO()
    with caplog.at_level("WARNING", logger="classifier.shadow"):
        call_command("shadow", "--looks", "3", "--priority", "normal", "--poll-seconds", "0.01", stdout=out)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "shadow process: a look failed (trying again every 0.01 s)"]  # once, not per look
    assert any("looking again after a failure" in r.getMessage() for r in caplog.records)
    assert list(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == [reply["id"]]


def test_staff_are_told_when_no_shadow_process_is_looking(process_mode, settings, tmp_path, admin_client):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                   "LOCATION": str(tmp_path / "cache")}}  # a cache the processes share
    logreg = shipped("logreg")
    assert not shadow.shadow_process_missing()  # nothing in shadow: nothing to warn about
    shadow.shadow_start(version=logreg)
    assert shadow.shadow_process_missing()
    page = admin_client.get(reverse("pages:stats")).content.decode()
    assert 'data-testid="shadow-process-missing"' in page and "manage.py shadow" in page
    admin_page = admin_client.get(reverse("admin:classifier_modelversion_change", args=[logreg.pk])).content.decode()
    assert 'data-testid="shadow-process-missing"' in admin_page

    shadow.ShadowPoller(batch_max=4).heartbeat()  # a shadow process looked just now
    assert 0 <= shadow.shadow_process_seen() < 5 and not shadow.shadow_process_missing()
    assert 'data-testid="shadow-process-missing"' not in admin_client.get(reverse("pages:stats")).content.decode()
    settings.SHADOW_WORKER = "thread"  # the web processes answer themselves: no process to miss
    from django.core.cache import cache
    cache.clear()
    assert not shadow.shadow_process_missing()


# ------------------------------------------------------------------ the report


def make_drawings(active: ModelVersion, candidate: ModelVersion, rows: list[tuple[int, int, int | None]]) -> list:
    """(active digit, candidate digit, label or None) per drawing, stored as predictions and shadow answers."""
    made = []
    for i, (digit, candidate_digit, label) in enumerate(rows):
        prediction = Prediction.objects.create(
            image=f"drawings/test/{i}.png", input_pixels=bytes(784), probabilities=[0.1] * 10, digit=digit,
            confidence=0.1, model_version=active, latency_ms=1.0, label=label,
            label_trust=Prediction.Trust.TRUSTED if label is not None else Prediction.Trust.NONE,
        )
        ShadowPrediction.objects.create(prediction=prediction, version=candidate, digit=candidate_digit,
                                        confidence=0.9, probabilities=[0.0] * 10)
        made.append(prediction)
    return made


# active, candidate, label: 10 answers, 6 agree; 7 labelled: candidate right on 5, active on 3,
# both on 2, only the candidate on 3, only the active on 1.
FIXTURE = [
    (1, 1, 1), (2, 2, 2), (3, 3, None), (4, 4, None), (5, 5, 6), (6, 6, None),  # agree
    (7, 1, 1), (8, 2, 2), (9, 3, 3),  # only the candidate right
    (0, 4, 0),  # only the active right
]


def test_report_numbers(staff_user):
    cnn, logreg = shipped("cnn"), shipped("logreg")
    shadow.shadow_start(version=logreg, by=staff_user)
    make_drawings(cnn, logreg, FIXTURE)
    report = shadow.shadow_report(logreg)
    assert (report.answers, report.agreed, report.labelled) == (10, 6, 7)
    assert (report.candidate_correct, report.active_correct) == (5, 3)
    assert (report.only_candidate, report.only_active) == (3, 1)
    assert report.agreement == 0.6 and report.candidate_accuracy == pytest.approx(5 / 7)
    assert report.active_accuracy == pytest.approx(3 / 7) and report.p_value == pytest.approx(0.625)
    assert report.in_shadow and report.since == logreg.shadow_since is not None
    evidence = shadow.shadow_evidence(logreg)
    assert (evidence.name, evidence.n, evidence.only_candidate, evidence.only_active) == ("shadow", 7, 3, 1)
    assert evidence.for_users and evidence.candidate_accuracy == pytest.approx(5 / 7)
    assert shadow.shadow_evidence(shipped("mlp")) is None
    empty = shadow.shadow_report(shipped("mlp"))
    assert empty.answers == 0 and empty.agreement is None and empty.p_value is None


def test_report_on_the_api_the_admin_page_and_the_stats_page(staff_client, admin_client, staff_user):
    cnn, logreg = shipped("cnn"), shipped("logreg")
    shadow.shadow_start(version=logreg, by=staff_user)
    make_drawings(cnn, logreg, FIXTURE)
    body = staff_client.get(shadow_url(logreg)).json()
    assert body["model"]["id"] == logreg.pk and body["event"]["action"] == "shadow"
    figures = body["shadow"]
    assert (figures["answers"], figures["agreed"], figures["labelled"]) == (10, 6, 7)
    assert figures["only_candidate"] == 3 and figures["only_active"] == 1 and figures["in_shadow"] is True
    assert figures["agreement"] == 0.6 and figures["candidate_accuracy"] == pytest.approx(5 / 7)

    html = admin_client.get(reverse("admin:classifier_modelversion_change", args=[logreg.pk])).content.decode()
    assert "In shadow since" in html and "60.00%" in html and "71.43%" in html and "42.86%" in html
    assert reverse("admin:classifier_modelversion_unshadow", args=[logreg.pk]) in html

    html = admin_client.get("/stats/").content.decode()
    assert 'data-testid="shadow-table"' in html and "logreg v1" in html
    assert "71.43% (5)" in html and "42.86% (3)" in html and "3 / 1" in html
    shadow.shadow_stop(version=logreg)
    assert "No candidate is in shadow" in admin_client.get("/stats/").content.decode()


# ------------------------------------------------------------------ the API's permissions and errors


def test_shadow_api_permissions_and_errors(api_client, user, staff_client):
    logreg = shipped("logreg")
    anonymous = api_client.post(shadow_url(logreg), {}, format="json")
    assert anonymous.status_code in (401, 403) and anonymous.json()["error"]["code"] in (
        "not_authenticated", "permission_denied")
    visitor = APIClient()
    visitor.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert_error(visitor.post(shadow_url(logreg), {}, format="json"), 403, "permission_denied")
    assert_error(visitor.get(shadow_url(logreg)), 403, "permission_denied")
    assert_error(visitor.post(f"/api/models/{logreg.pk}/promote/", {}, format="json"), 403, "permission_denied")
    assert not ModelVersion.objects.in_shadow().exists()

    assert_error(staff_client.post("/api/models/99999/shadow/", {}, format="json"), 404, "not_found")
    assert_error(staff_client.post(shadow_url(logreg), {"reason": ["x"]}, format="json"), 400, "invalid_request")
    assert_error(staff_client.delete(shadow_url(logreg), {}, format="json"), 409, "not_in_shadow")
    assert_error(staff_client.post(shadow_url(shipped("cnn")), {}, format="json"), 409, "not_a_candidate")

    started = staff_client.post(shadow_url(logreg), {"reason": "watch it"}, format="json")
    assert started.status_code == 200 and started.json()["event"]["reason"] == "watch it"
    assert_error(staff_client.post(shadow_url(logreg), {}, format="json"), 409, "already_in_shadow")
    stopped = staff_client.delete(shadow_url(logreg), {"reason": "done"}, format="json")
    assert stopped.status_code == 200 and stopped.json()["event"]["action"] == "unshadow"
    assert list(LifecycleEvent.objects.filter(to_version=logreg).values_list("action", "by__username")) == [
        ("unshadow", "staff"), ("shadow", "staff")]


# ------------------------------------------------------------------ the admin


def test_admin_actions_and_confirmation_pages(admin_client, admin_user):
    versions = reverse("admin:classifier_modelversion_changelist")
    logreg, mlp, cnn = shipped("logreg"), shipped("mlp"), shipped("cnn")
    response = admin_client.post(versions, {"action": "shadow_selected", "_selected_action": [logreg.pk, cnn.pk]},
                                 follow=True)
    assert list(shadow.shadow_versions()) == [logreg]
    assert "only a candidate can be put in shadow" in response.content.decode()
    assert LifecycleEvent.objects.get(action="shadow").by == admin_user

    admin_client.post(versions, {"action": "unshadow_selected", "_selected_action": [logreg.pk]})
    assert not shadow.shadow_versions().exists() and LifecycleEvent.objects.filter(action="unshadow").count() == 1

    url = reverse("admin:classifier_modelversion_shadow", args=[mlp.pk])
    assert "Put in shadow" in admin_client.get(url).content.decode() and not shadow.shadow_versions().exists()
    response = admin_client.post(url, {"reason": "from its page"})
    assert response.status_code == 302 and list(shadow.shadow_versions()) == [mlp]
    assert LifecycleEvent.objects.filter(action="shadow").first().reason == "from its page"
    response = admin_client.post(reverse("admin:classifier_modelversion_unshadow", args=[mlp.pk]), {"reason": "x"})
    assert response.status_code == 302 and not shadow.shadow_versions().exists()


# ------------------------------------------------------------------ the gate


def paired(name: str, *, n: int, both: int, b: int, c: int, for_users: bool = True) -> Evidence:
    candidate = torch.zeros(n, dtype=torch.bool)
    active = torch.zeros(n, dtype=torch.bool)
    candidate[:both] = active[:both] = True
    candidate[both:both + b] = True
    active[both + b:both + b + c] = True
    return Evidence.paired(name=name, title=name, candidate=candidate, active=active, for_users=for_users, margin=0.0)


def test_a_required_set_must_be_large_enough_and_show_no_loss():
    active = shipped("cnn")
    mnist = paired("mnist", n=10_000, both=9_900, b=60, c=10, for_users=False)
    field = paired("field", n=500, both=450, b=30, c=5)
    need = [Requirement("shadow", "shadow traffic", 50)]
    assert gate_decide([mnist, field], active=active, alpha=0.05).promote  # not required: promoted

    missing = gate_decide([mnist, field], active=active, alpha=0.05, requirements=need)
    assert not missing.promote and missing.figures["rule"] == "required_evidence"
    assert "the shadow traffic has 0 of the 50 images required" in missing.reason
    few = gate_decide([mnist, field, paired("shadow", n=20, both=18, b=2, c=0)], active=active, alpha=0.05,
                      requirements=need)
    assert not few.promote and "has 20 of the 50" in few.reason and few.figures["required"] == {"shadow": 50}

    # significantly better on the field set, but a small (not significant) loss on shadow traffic: refused
    loss = gate_decide([mnist, field, paired("shadow", n=80, both=70, b=1, c=3)], active=active, alpha=0.05,
                       requirements=need)
    assert not loss.promote and loss.figures["rule"] == "required_no_loss"
    assert "a loss against cnn v1 on the shadow" in loss.reason
    # the same loss when shadow traffic is only evidence: rule 2 promotes on the field set
    assert gate_decide([mnist, field, paired("shadow", n=80, both=70, b=1, c=3)], active=active, alpha=0.05).promote

    fine = gate_decide([mnist, field, paired("shadow", n=80, both=70, b=3, c=3)], active=active, alpha=0.05,
                       requirements=need)
    assert fine.promote and fine.figures["rule"] == "significantly_better"


def shadow_on_mnist(active: ModelVersion, candidate: ModelVersion, mnist_test, *, candidate_right: int,
                    active_right: int, n: int = 12) -> None:
    """``n`` labelled live drawings (MNIST test digits) with chosen answers for both versions."""
    for i in range(n):
        label = int(mnist_test.labels[i])
        prediction = Prediction.objects.create(
            image=f"drawings/test/{i}.png", input_pixels=mnist_test.images[i].numpy().tobytes(),
            probabilities=[0.1] * 10, digit=label if i < active_right else (label + 1) % 10, confidence=0.1,
            model_version=active, latency_ms=1.0, label=label, label_trust=Prediction.Trust.TRUSTED,
        )
        ShadowPrediction.objects.create(prediction=prediction, version=candidate,
                                        digit=label if i < candidate_right else (label + 2) % 10,
                                        confidence=0.9, probabilities=[0.0] * 10)


def test_the_gate_on_a_candidate_in_shadow(mnist_settings, mnist_test, settings, staff_client, staff_user):
    settings.PROMOTION_MARGIN_MNIST = settings.PROMOTION_MARGIN_FIELD = 0.0
    logreg, mlp = shipped("logreg"), shipped("mlp")
    lifecycle.model_version_activate(version=logreg, by=staff_user, reason="a weaker active version")
    shadow.shadow_start(version=mlp, by=staff_user)
    settings.PROMOTION_SHADOW_MIN_LABELLED = 20

    shadow_on_mnist(logreg, mlp, mnist_test, candidate_right=12, active_right=6)
    too_few = shadow.shadow_gate(version=mlp)  # mlp is far better on MNIST, but 12 of 20 shadow labels
    assert not too_few.promote and too_few.figures["rule"] == "required_evidence", too_few.reason
    assert too_few.figures["shadow"]["n"] == 12 and too_few.figures["shadow"]["only_candidate"] == 6

    settings.PROMOTION_SHADOW_MIN_LABELLED = 10
    response = staff_client.post(f"/api/models/{mlp.pk}/promote/", {"reason": "shadow looks good"}, format="json")
    body = response.json()
    assert response.status_code == 200 and body["promoted"] is True, body
    assert body["decision"]["figures"]["required"] == {"shadow": 10}
    assert body["model"]["status"] == "active" and body["event"]["action"] == "promote"
    assert body["event"]["reason"].startswith("shadow looks good: promoted")
    assert not shadow.shadow_versions().exists()  # active now, out of shadow


def test_the_gate_refuses_a_loss_on_shadow_traffic(mnist_settings, mnist_test, settings, staff_user, staff_client):
    settings.PROMOTION_MARGIN_MNIST = settings.PROMOTION_MARGIN_FIELD = 0.0
    logreg, mlp = shipped("logreg"), shipped("mlp")
    lifecycle.model_version_activate(version=logreg, by=staff_user, reason="a weaker active version")
    shadow.shadow_start(version=mlp, by=staff_user)
    shadow_on_mnist(logreg, mlp, mnist_test, candidate_right=10, active_right=12)  # loses 2 of 12

    settings.PROMOTION_SHADOW_MIN_LABELLED = 0  # evidence only: below the active version, the margin rule refuses
    evidence_only = shadow.shadow_gate(version=mlp)
    assert not evidence_only.promote and evidence_only.figures["rule"] == "margin"
    assert "shadow traffic 83.33% < 100.00% of logreg v1 on the same 12 images" in evidence_only.reason
    settings.PROMOTION_SHADOW_MIN_LABELLED = 10
    response = staff_client.post(f"/api/models/{mlp.pk}/promote/", {}, format="json")
    body = response.json()
    assert response.status_code == 200 and body["promoted"] is False and body["event"] is None
    assert body["decision"]["figures"]["rule"] == "required_no_loss"
    mlp.refresh_from_db()
    assert mlp.status == "candidate" and mlp.in_shadow and ModelVersion.objects.active().get() == logreg


def test_a_candidate_that_cannot_be_loaded_is_counted_and_the_others_answer(api_client, held_worker,
                                                                            django_capture_on_commit_callbacks):
    broken = fake_version("broken")
    ModelVersion.objects.filter(pk=broken.pk).update(shadow_since="2020-01-01T00:00:00Z")
    shadow.shadow_start(version=shipped("logreg"))
    with django_capture_on_commit_callbacks(execute=True):
        reply = predict(api_client)
    assert held_worker.process(drain(held_worker)) == 1
    assert list(ShadowPrediction.objects.values_list("prediction_id", "version__name")) == [(reply["id"], "logreg")]
    assert held_worker.stats()["failed"] == 1 and held_worker.stats()["answered"] == 1
