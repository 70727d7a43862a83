"""Fixtures for the dashboard's consumers and page.

Consumers are driven through the project's real ASGI application (origin check, session auth, routing)
with channels' ``WebsocketCommunicator`` on an in-memory channel layer; the scenario of each test is a
coroutine run with ``async_to_sync``, so the consumers' database reads use the test's transaction.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from training import events
from training.models import TrainingRun

ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture(autouse=True)
def _dashboard_settings(settings):
    settings.TRAINING_EXECUTOR = "inline"
    settings.TRAINING_REAP_SECONDS = 0
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def run_scenario() -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    """Run an async scenario to its end (from this test's thread, so it shares the test's database)."""

    def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
        return async_to_sync(scenario)()

    return run


@pytest.fixture
def staff_cookie(staff_user) -> bytes:
    client = Client()
    client.force_login(staff_user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.fixture
def user_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def connect_to(path: str, *, cookie: bytes | None = None, origin: tuple[bytes, bytes] | None = ORIGIN) -> WebsocketCommunicator:
    from mnistsite.asgi import application

    headers = [origin] if origin else []
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive(communicator: WebsocketCommunicator, timeout: float = 2.0) -> dict[str, Any]:
    return await communicator.receive_json_from(timeout=timeout)


async def drain(communicator: WebsocketCommunicator, wait: float = 0.0) -> list[dict[str, Any]]:
    """What the consumer has sent within ``wait`` seconds from now (JSON messages and closes)."""
    await asyncio.sleep(wait)
    messages = []
    while not communicator.output_queue.empty():
        output = await communicator.receive_output(timeout=1)
        messages.append(json.loads(output["text"]) if output["type"] == "websocket.send" else output)
    return messages


async def progress(run_id: int, data: dict[str, Any]) -> None:
    """Publish a progress event the way a training run does."""
    await sync_to_async(events.publish_progress)(run_id, data)


async def lifecycle(run_id: int, data: dict[str, Any]) -> None:
    """Publish a lifecycle event the way the training services do."""
    await sync_to_async(events.publish_lifecycle)(run_id, data)


def batch(step: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "batch", "step": step, "epoch": 1, "loss": 2.3 / step, "lr": 0.01, "samples_per_s": 5000.0,
            "total_steps": 1000, "progress": step / 1000, "eta_s": (1000 - step) * 0.01, **extra}


def make_run(**fields: Any) -> TrainingRun:
    values: dict[str, Any] = {"config": {"arch": "logreg", "epochs": 2}, "executor": "inline", "total_epochs": 2}
    values.update(fields)
    return TrainingRun.objects.create(**values)
