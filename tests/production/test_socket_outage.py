"""Dashboard handshakes while Redis (the channel layer) is down: closed with a reason, never a 500 or a
traceback; sockets work again once Redis is back, without a restart."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dashboard.consumers import CLOSE_TRY_AGAIN_LATER

pytestmark = pytest.mark.slow

TIMEOUT = 20


async def _handshake(url: str, origin: str) -> dict:
    """What one dashboard socket gets: the HTTP status of a refused handshake, or its messages and close code."""
    try:
        socket = await connect(url, origin=origin, ping_interval=None, open_timeout=TIMEOUT)
    except InvalidStatus as refused:
        return {"status": refused.response.status_code}
    messages = []
    try:
        while len(messages) < 1 or messages[0].get("type") == "error":
            messages.append(json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT)))
    except ConnectionClosed:
        pass
    await socket.close()
    return {"messages": messages, "close_code": socket.close_code}


def _run(coroutine):
    # in a thread of its own: the browser tests' driver may keep an event loop running in this one
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def test_handshakes_while_redis_is_down_are_closed_with_a_reason_and_work_again_after(deployment, redis_server):
    with deployment.serve("ws") as base:
        ws = "ws" + base.removeprefix("http")
        before = _run(_handshake(f"{ws}/ws/training/", base))

        redis_server.stop()
        down = [_run(_handshake(f"{ws}{path}", base)) for path in ("/ws/training/", "/ws/training/1/",
                                                                     "/ws/training/")]
        redis_server.start()  # same port: the layer's pool connects again on its next use
        after = _run(_handshake(f"{ws}/ws/training/", base))

    assert before["messages"][0]["type"] == "runs"
    for result in down:
        assert "status" not in result, result  # accepted, not refused with an HTTP 500
        assert result["messages"][0]["type"] == "error", result
        assert result["messages"][0]["code"] == "live_updates_unavailable"
        assert result["close_code"] == CLOSE_TRY_AGAIN_LATER
    assert after["messages"][0]["type"] == "runs"
    assert deployment.log_problems() == []
    warnings = [line for path in deployment.logs for line in path.read_text().splitlines()
                if "channel layer is unavailable" in line]
    assert len(warnings) == 1  # one line for the outage, not one (or a traceback) per handshake
