"""A staff socket survives garbage: deeply nested JSON gets an error message, the socket stays open."""
from __future__ import annotations

import pytest

from .conftest import connect_to, receive

pytestmark = pytest.mark.django_db


def test_deeply_nested_message_gets_an_error_and_the_socket_lives_on(run_scenario, staff_cookie):
    async def scenario():
        socket = connect_to("/ws/training/", cookie=staff_cookie)
        connected, _ = await socket.connect()
        assert connected
        await receive(socket)  # the run list
        await socket.send_to(text_data="[" * 10000 + "]" * 10000)
        answer = await receive(socket)
        await socket.send_to(text_data='{"action": "nothing"}')
        still_there = await receive(socket)
        await socket.disconnect()
        return answer, still_there

    answer, still_there = run_scenario(scenario)
    assert answer["type"] == "error" and answer["code"] == "invalid_message"
    assert still_there["type"] == "error" and still_there["code"] == "unknown_action"
