"""A process holds at most DASHBOARD_MAX_SOCKETS sockets; one more is refused cleanly, not with an error."""
from __future__ import annotations

import pytest

from dashboard.consumers import CLOSE_TRY_AGAIN_LATER, SocketCount

from .conftest import connect_to, receive

pytestmark = pytest.mark.django_db


def test_past_the_limit_a_socket_is_told_to_come_back_later(run_scenario, settings):
    settings.DASHBOARD_MAX_SOCKETS = 2

    async def scenario():
        first, second = connect_to("/ws/training/"), connect_to("/ws/training/")
        for socket in (first, second):
            assert (await socket.connect())[0]
            assert (await receive(socket))["type"] == "runs"
        third = connect_to("/ws/training/")
        accepted, _ = await third.connect()
        refusal = await receive(third)
        closed = await third.receive_output(timeout=2)
        counted = SocketCount.open
        await first.disconnect()  # (the consumers close the test's database connection when they end)
        await second.disconnect()
        return accepted, refusal, closed, counted

    open_before = SocketCount.open
    accepted, refusal, closed, counted = run_scenario(scenario)
    assert accepted and refusal["code"] == "too_many_sockets" and refusal["limit"] == 2
    assert closed["type"] == "websocket.close" and closed["code"] == CLOSE_TRY_AGAIN_LATER
    assert counted == open_before + 2  # the refused one was never counted
    assert SocketCount.open == open_before  # closed sockets give their place back
