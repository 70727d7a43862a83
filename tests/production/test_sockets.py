"""Dashboard sockets under the Redis channel layer: a thousand on one process, idle for over a minute,
all still delivered to; one more is refused cleanly; a closed one gives its place back."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dashboard.consumers import CLOSE_TRY_AGAIN_LATER
from mnistsite.channel_layers import PooledRedisChannelLayer

from .conftest import needs_postgresql

pytestmark = [pytest.mark.slow, needs_postgresql]

SOCKETS = 1000
IDLE_SECONDS = 65  # longer than any timeout between the server, the channel layer and Redis
RECEIVE_TIMEOUT = 60


async def _open(url: str, origin: str):
    socket = await connect(url, origin=origin, ping_interval=None, open_timeout=RECEIVE_TIMEOUT, max_queue=64)
    first = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT))
    return socket, first


async def _next_of_type(socket, kind: str) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT))
        if message["type"] == kind:
            return message


async def _scenario(base: str, redis_url: str) -> dict:
    origin = base
    url = "ws" + base.removeprefix("http") + "/ws/training/"
    opened = await asyncio.gather(*(_open(url, origin) for _ in range(SOCKETS)), return_exceptions=True)
    sockets = [item[0] for item in opened if not isinstance(item, BaseException)]
    firsts = [item[1]["type"] for item in opened if not isinstance(item, BaseException)]
    failures = [repr(item) for item in opened if isinstance(item, BaseException)]

    extra, refusal = await _open(url, origin)
    try:
        await asyncio.wait_for(extra.recv(), RECEIVE_TIMEOUT)
    except ConnectionClosed:
        pass
    refused_code = extra.close_code

    await asyncio.sleep(IDLE_SECONDS)

    layer = PooledRedisChannelLayer(hosts=[{"address": redis_url}])
    await layer.group_send("training", {"type": "run.lifecycle", "data": {"run": 424242, "status": "queued"}})
    delivered = await asyncio.gather(*(_next_of_type(s, "lifecycle") for s in sockets), return_exceptions=True)
    got = [m for m in delivered if isinstance(m, dict) and m["data"]["run"] == 424242]
    lost = [repr(m) for m in delivered if not isinstance(m, dict)][:5]

    await sockets.pop().close()  # a place freed is a place taken
    replacement, replacement_first = await _open(url, origin)
    await replacement.close()
    await asyncio.gather(*(s.close() for s in sockets))
    return {"opened": len(sockets) + 1, "firsts": set(firsts), "failures": failures[:5], "refusal": refusal,
            "refused_code": refused_code, "delivered": len(got), "lost": lost,
            "replacement": replacement_first["type"]}


def test_a_thousand_idle_sockets_stay_open_and_delivered_to(deployment, redis_server):
    # Every socket comes from 127.0.0.1: one client may hold them all here (the per-client cap is its own test).
    with deployment.serve("ws", DASHBOARD_MAX_SOCKETS=str(SOCKETS), DASHBOARD_MAX_SOCKETS_PER_CLIENT="0") as base:
        # in a thread of its own: the browser tests' driver may keep an event loop running in this one
        with ThreadPoolExecutor(1) as thread:
            result = thread.submit(asyncio.run, _scenario(base, redis_server.url)).result()
    assert result["failures"] == [] and result["opened"] == SOCKETS
    assert result["firsts"] == {"runs"}
    assert result["refusal"]["type"] == "error" and result["refusal"]["code"] == "too_many_sockets"
    assert result["refused_code"] == CLOSE_TRY_AGAIN_LATER
    assert result["delivered"] == SOCKETS and result["lost"] == []
    assert result["replacement"] == "runs"
    assert deployment.log_problems() == []
