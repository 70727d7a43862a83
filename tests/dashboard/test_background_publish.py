"""Runs that no request started (the retraining policy's in-process scheduler, the reaper) reach the
dashboard's sockets in the one-process layout, where the channel layer lives in memory on the server's
event loop."""
from __future__ import annotations

import asyncio
import threading

import pytest

from training import events

from .conftest import connect_to, make_run, receive

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_thread_no_request_started_reaches_the_dashboard_sockets(run_scenario):
    run = make_run(status="queued")
    errors: list[BaseException] = []

    def scheduler_thread() -> None:  # like the policy's PeriodicThread: no home loop, no request
        try:
            events.set_home_loop(None)
            events.publish_lifecycle(run.pk, {"status": "queued"})
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    async def scenario():
        socket = connect_to("/ws/training/")
        assert (await socket.connect())[0]
        await receive(socket)  # the run list
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=scheduler_thread)
        started = loop.time()
        thread.start()
        message = await receive(socket, timeout=10)
        waited = loop.time() - started
        await loop.run_in_executor(None, thread.join)
        await socket.disconnect()
        return message, waited

    message, waited = run_scenario(scenario)
    assert not errors
    # Handed to the server's loop, which wakes for it at once (a message queued from another loop
    # waits until something else wakes the server's loop: seconds, or never on an idle server).
    assert waited < 1.5, f"the socket got the message after {waited:.2f} s"
    assert message["type"] == "lifecycle"
    assert message["data"]["run"] == run.pk and message["data"]["event"] == "queued"
