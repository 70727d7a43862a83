"""The dashboard's WebSocket consumers: catch-up on connect, event shapes, rate limiting, unknown runs,
who may send commands, and sockets that go away."""
from __future__ import annotations

import asyncio
import logging

import pytest

from dashboard.consumers import Coalescer, RunConsumer
from training.models import TrainingRun

from .conftest import batch, connect_to, drain, lifecycle, make_run, progress, receive

# The consumers' database calls (channels' ``database_sync_to_async``) close connections that are inside
# a transaction, so these tests commit (as channels' own tests do).
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

HISTORY = {
    "batches": [{"step": s, "epoch": 1, "loss": 2.3 / s, "lr": 0.01, "samples_per_s": 4000.0} for s in (1, 5, 9)],
    "epochs": [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.85, "val_loss": 0.4, "val_accuracy": 0.88,
                "lr": 0.01, "seconds": 1.5}],
}


@pytest.fixture
def fast_batches(monkeypatch):
    """Ten batch messages a second per connection (the default is four), to keep the tests short."""
    monkeypatch.setattr(RunConsumer, "batch_rate", 10.0)
    return 0.1


@pytest.fixture
def outbox_timers(monkeypatch) -> list[asyncio.Task]:
    """The timers the consumers' outboxes start for a pending batch message: a test waits for one to end
    instead of sleeping past its moment."""
    timers: list[asyncio.Task] = []
    offer = Coalescer.offer

    async def recording_offer(self, message):
        await offer(self, message)
        if self._timer is not None and self._timer not in timers:
            timers.append(self._timer)

    monkeypatch.setattr(Coalescer, "offer", recording_offer)
    return timers


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait (bounded) for the consumer's task to get somewhere."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ catch-up and event shapes


def test_a_late_joiner_gets_the_state_and_the_whole_history(run_scenario, staff_user):
    run = make_run(status="running", epoch=1, step=9, total_steps=20, progress=0.45, eta_seconds=3.0,
                   history=HISTORY, created_by=staff_user, worker="host:1", log="started on host:1\n")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        connected, _ = await socket.connect()
        assert connected
        message = await receive(socket)
        await socket.disconnect()
        return message

    message = run_scenario(scenario)
    assert message["type"] == "state"
    state = message["data"]
    assert state["id"] == run.pk and state["status"] == "running" and state["arch"] == "logreg"
    assert state["history"] == HISTORY
    assert state["progress"] == {"epoch": 1, "total_epochs": 2, "step": 9, "total_steps": 20, "fraction": 0.45,
                                 "eta_s": 3.0, "samples_per_s": None}
    # Watching is public, but the log, the worker and who started the run are for staff.
    assert not {"log", "worker", "created_by"} & set(state)


def test_staff_see_the_log_and_the_worker(run_scenario, staff_cookie, staff_user):
    run = make_run(status="running", created_by=staff_user, worker="host:1", log="started on host:1\n")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/", cookie=staff_cookie)
        assert (await socket.connect())[0]
        message = await receive(socket)
        await socket.disconnect()
        return message

    state = run_scenario(scenario)["data"]
    assert state["log"] == "started on host:1\n" and state["worker"] == "host:1" and state["created_by"] == "staff"


def test_progress_and_lifecycle_events_are_relayed_in_order_with_a_final_state(run_scenario):
    run = make_run(status="running")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        assert (await socket.connect())[0]
        assert (await receive(socket))["type"] == "state"
        await progress(run.pk, {"kind": "start", "arch": "logreg", "epochs": 2, "total_steps": 20, "device": "cpu"})
        await progress(run.pk, batch(1))
        await progress(run.pk, {"kind": "epoch", "epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8,
                                "val_loss": 0.4, "val_accuracy": 0.85, "lr": 0.01, "seconds": 1.0, "total_epochs": 2})
        await progress(run.pk, {"kind": "evaluate", "test_accuracy": 0.9, "field_accuracy": None, "field_n": 0})
        # The services mark the row before they publish.
        metrics = {"test_accuracy": 0.9, "per_class_accuracy": [0.9] * 10,
                   "confusion_matrix": [[9 if i == j else 0 for j in range(10)] for i in range(10)]}
        await TrainingRun.objects.filter(pk=run.pk).aupdate(
            status="succeeded", metrics=metrics, progress=1.0,
            promotion={"requested": True, "promoted": True, "reason": "better on MNIST test"})
        await lifecycle(run.pk, {"status": "succeeded", "version": None, "promoted": True, "reason": "better",
                                 "test_accuracy": 0.9, "field_accuracy": None})
        messages = [await receive(socket) for _ in range(7)]
        rest = await drain(socket, 0.1)
        await socket.disconnect()
        return messages, rest

    messages, rest = run_scenario(scenario)
    assert [(m["type"], m["data"].get("kind") or m["data"].get("event")) for m in messages] == [
        ("progress", "start"), ("progress", "batch"), ("progress", "epoch"), ("progress", "evaluate"),
        ("lifecycle", "finished"), ("lifecycle", "promoted"), ("state", None),
    ]
    assert messages[1]["data"] == {"run": run.pk, **batch(1)}
    assert messages[2]["data"]["val_accuracy"] == 0.85 and messages[3]["data"]["test_accuracy"] == 0.9
    finished = messages[4]["data"]
    assert finished["status"] == "succeeded" and finished["summary"]["status"] == "succeeded"
    final = messages[6]["data"]
    assert final["status"] == "succeeded" and len(final["metrics"]["confusion_matrix"]) == 10
    assert final["promotion"]["promoted"] is True and final["progress"]["fraction"] == 1.0
    assert rest == []


def test_the_all_runs_socket_lists_runs_then_streams_their_lifecycle(run_scenario):
    older = make_run(status="succeeded")
    newer = make_run(status="queued")

    async def scenario():
        socket = connect_to("/ws/training/")
        assert (await socket.connect())[0]
        snapshot = await receive(socket)
        await TrainingRun.objects.filter(pk=newer.pk).aupdate(status="running", worker="gpu-host:7")
        await lifecycle(newer.pk, {"status": "running", "worker": "gpu-host:7"})
        await progress(newer.pk, batch(1))  # progress is not on this socket
        started = await receive(socket)
        await TrainingRun.objects.filter(pk=newer.pk).aupdate(status="cancelled")
        await lifecycle(newer.pk, {"status": "cancelled"})
        cancelled = await receive(socket)
        rest = await drain(socket, 0.1)
        await socket.disconnect()
        return snapshot, started, cancelled, rest

    snapshot, started, cancelled, rest = run_scenario(scenario)
    assert snapshot["type"] == "runs" and [r["id"] for r in snapshot["data"]] == [newer.pk, older.pk]
    assert snapshot["data"][0]["status"] == "queued" and "created_by" not in snapshot["data"][0]
    assert started == {"type": "lifecycle", "data": {
        "run": newer.pk, "status": "running", "event": "started", "summary": started["data"]["summary"]}}
    assert started["data"]["summary"]["status"] == "running" and "worker" not in started["data"]
    assert cancelled["data"]["event"] == "cancelled" and cancelled["data"]["summary"]["status"] == "cancelled"
    assert rest == []


# ------------------------------------------------------------------ rate limiting


def test_a_burst_of_batch_events_is_coalesced_and_the_last_point_kept(run_scenario, monkeypatch):
    # One batch message a second: the burst below is sent well within the window, even on a busy machine.
    monkeypatch.setattr(RunConsumer, "batch_rate", 1.0)
    run = make_run(status="running")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        assert (await socket.connect())[0]
        await receive(socket)
        for step in range(1, 31):
            await progress(run.pk, batch(step))
        immediately = await drain(socket)
        later = [await receive(socket, timeout=5.0)]  # flushed when the timer's moment comes
        later += await drain(socket)
        await socket.disconnect()
        return immediately, later

    immediately, later = run_scenario(scenario)
    assert [m["data"]["step"] for m in immediately] == [1]
    assert [m["data"]["step"] for m in later] == [30]  # flushed on the timer: the latest one, once


def test_epoch_and_lifecycle_events_are_never_held_back_and_keep_their_order(run_scenario, fast_batches):
    run = make_run(status="running")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        assert (await socket.connect())[0]
        await receive(socket)
        await progress(run.pk, batch(1))
        await progress(run.pk, batch(2))
        await progress(run.pk, batch(3))
        await progress(run.pk, {"kind": "epoch", "epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "lr": 0.01,
                                "seconds": 1.0, "total_epochs": 2})
        await lifecycle(run.pk, {"status": "running"})
        messages = await drain(socket, 0.05)
        messages += await drain(socket, 2.5 * fast_batches)
        await socket.disconnect()
        return messages

    messages = run_scenario(scenario)
    shapes = [m["data"].get("step") or m["data"].get("kind") or m["data"].get("event") for m in messages]
    assert shapes == [1, 3, "epoch", "started"]  # 2 was replaced by 3, sent before the epoch


def test_a_steady_stream_is_held_to_the_rate(run_scenario, fast_batches):
    run = make_run(status="running")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        assert (await socket.connect())[0]
        await receive(socket)
        loop = asyncio.get_running_loop()
        started = loop.time()
        step = 0
        # A batch event every 5 ms: at least 60 of them and for at least 0.6 s (a loaded machine
        # sends fewer per second, so the count is bounded, not the time alone).
        while (step < 60 or loop.time() - started < 0.6) and step < 1000:
            step += 1
            await progress(run.pk, batch(step))
            await asyncio.sleep(0.005)
        elapsed = loop.time() - started
        messages = await drain(socket, 2.5 * fast_batches)
        await socket.disconnect()
        return step, elapsed, messages

    sent, elapsed, messages = run_scenario(scenario)
    steps = [m["data"]["step"] for m in messages]
    assert sent >= 60
    assert 4 <= len(steps) <= elapsed / fast_batches + 2
    assert steps == sorted(steps) and steps[-1] == sent


# ------------------------------------------------------------------ unknown runs, closed sockets


@pytest.mark.parametrize("run_id", ["999999", "abc", "0", "99999999999999999999999", "%20"])
def test_an_unknown_run_gets_an_error_and_a_4404_close(run_scenario, run_id, caplog):
    caplog.set_level(logging.WARNING)

    async def scenario():
        socket = connect_to(f"/ws/training/{run_id}/")
        connected, _ = await socket.connect()
        assert connected
        error = await receive(socket)
        closed = await socket.receive_output(timeout=1)
        await socket.disconnect()
        return error, closed

    error, closed = run_scenario(scenario)
    assert error["type"] == "error" and error["code"] == "unknown_run"
    assert closed == {"type": "websocket.close", "code": 4404}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_other_paths_and_foreign_origins_are_refused_at_the_handshake(run_scenario, caplog):
    run = make_run()
    caplog.set_level(logging.WARNING)

    async def scenario():
        results = []
        for path, origin in [("/ws/nothing-here/", None), ("/ws/training/", (b"origin", b"http://evil.example")),
                             (f"/ws/training/{run.pk}/", (b"origin", b"http://evil.example"))]:
            kwargs = {"origin": origin} if origin else {}
            socket = connect_to(path, **kwargs)
            connected, _ = await socket.connect()
            results.append(connected)
            await socket.disconnect()
        return results

    assert run_scenario(scenario) == [False, False, False]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_socket_closed_with_a_batch_pending_leaves_no_error(run_scenario, fast_batches, outbox_timers, caplog):
    run = make_run(status="running")
    caplog.set_level(logging.WARNING)

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        assert (await socket.connect())[0]
        await receive(socket)
        await progress(run.pk, batch(1))
        await progress(run.pk, batch(2))
        await until(lambda: outbox_timers)  # pending on the timer
        await socket.disconnect()
        await asyncio.wait(outbox_timers, timeout=2)  # the timer has ended (cancelled, or its moment passed)
        assert all(timer.done() for timer in outbox_timers)
        await progress(run.pk, batch(3))  # and the group has nobody left to send to
        await lifecycle(run.pk, {"status": "failed", "error": "boom"})

    run_scenario(scenario)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_diverging_loss_is_sent_as_valid_json(run_scenario):
    run = make_run(status="running")

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/")
        assert (await socket.connect())[0]
        await receive(socket)
        await progress(run.pk, batch(1, loss=float("nan"), eta_s=float("inf")))
        output = await socket.receive_output(timeout=1)
        await socket.disconnect()
        return output["text"]

    text = run_scenario(scenario)
    assert "NaN" not in text and "Infinity" not in text and '"loss": null' in text


# ------------------------------------------------------------------ commands


@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_non_staff_commands_are_refused(run_scenario, who, user_cookie):
    run = make_run(status="queued")
    cookie = user_cookie if who == "user" else None

    async def scenario():
        socket = connect_to(f"/ws/training/{run.pk}/", cookie=cookie)
        assert (await socket.connect())[0]
        await receive(socket)
        answers = []
        for text in ['{"action": "cancel"}', "not json", '{"action": "start"}']:
            await socket.send_to(text_data=text)
            answers.append(await receive(socket))
        listing = connect_to("/ws/training/", cookie=cookie)
        assert (await listing.connect())[0]
        await receive(listing)
        await listing.send_json_to({"action": "cancel", "run": run.pk})
        answers.append(await receive(listing))
        await socket.disconnect()
        await listing.disconnect()
        return answers

    answers = run_scenario(scenario)
    assert [(a["type"], a["code"]) for a in answers] == [("error", "forbidden")] * 4
    run.refresh_from_db()
    assert run.status == "queued" and not run.cancel_requested


def test_staff_cancel_a_run_over_its_socket(run_scenario, staff_cookie):
    queued = make_run(status="queued")
    running = make_run(status="running")

    async def scenario():
        socket = connect_to(f"/ws/training/{queued.pk}/", cookie=staff_cookie)
        assert (await socket.connect())[0]
        await receive(socket)
        await socket.send_json_to({"action": "cancel"})
        cancelled = [await receive(socket) for _ in range(3)]  # the answer, then the run's own news
        await socket.send_json_to({"action": "cancel"})  # again
        again = await receive(socket)
        await socket.send_json_to({"action": "launch"})
        unknown = await receive(socket)
        await socket.send_to(text_data="[1, 2]")
        invalid = await receive(socket)
        await socket.disconnect()

        socket = connect_to(f"/ws/training/{running.pk}/", cookie=staff_cookie)
        assert (await socket.connect())[0]
        await receive(socket)
        await socket.send_json_to({"action": "cancel"})
        requested = await receive(socket)
        await socket.disconnect()
        return cancelled, again, unknown, invalid, requested

    cancelled, again, unknown, invalid, requested = run_scenario(scenario)
    ack, news, final = cancelled
    assert ack["type"] == "ack" and ack["action"] == "cancel" and ack["data"]["status"] == "cancelled"
    assert news["type"] == "lifecycle" and news["data"]["event"] == "cancelled"
    assert final["type"] == "state" and final["data"]["status"] == "cancelled"
    assert again["type"] == "error" and again["code"] == "run_finished"
    assert unknown["code"] == "unknown_action" and invalid["code"] == "invalid_message"
    assert requested["type"] == "ack" and requested["data"]["cancel_requested"] is True
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == "cancelled"
    assert running.status == "running" and running.cancel_requested  # it stops at its next batch
