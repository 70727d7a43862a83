"""Typed training events published through the channel layer (the dashboard's consumers relay them).

Groups and messages:

- ``training.run.<id>``: ``{"type": "run.progress", "data": {...}}`` for one run (``data["kind"]`` is
  ``start``, ``batch``, ``epoch`` or ``evaluate``) and ``{"type": "run.lifecycle", "data": {...}}``;
- ``training``: every run's ``run.lifecycle`` messages (queued, running, succeeded, failed, cancelled).

Publishing never breaks a run: a channel layer that is down is logged and skipped.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

ALL_RUNS_GROUP = "training"
PUBLISH_TIMEOUT_SECONDS = 2.0

_home = threading.local()
# The ASGI server's event loop, once a request or a dashboard socket showed it: publishers in threads
# the server did not start from a request (the retraining policy's scheduler, the run reaper) hand
# in-memory messages to it too.
_server_loop: asyncio.AbstractEventLoop | None = None


def run_group(run_id: int) -> str:
    return f"training.run.{run_id}"


def set_home_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Publish from this thread on ``loop`` (the server's event loop, for the in-memory channel layer).

    The in-memory layer is not thread-safe: a background training thread inside the server process
    must hand its messages to the loop the consumers run on. Celery workers publish through Redis and
    need none of this.
    """
    _home.loop = loop


def remember_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Note the loop the server's consumers run on (called as a dashboard socket connects)."""
    global _server_loop
    _server_loop = loop


def _publish_loop(layer: Any) -> asyncio.AbstractEventLoop | None:
    """Where this thread's messages go: its home loop, else (in-memory layer only) the server's loop."""
    loop = getattr(_home, "loop", None)
    if loop is None and isinstance(layer, InMemoryChannelLayer):
        loop = _server_loop
    if loop is None or not loop.is_running() or loop.is_closed():
        return None
    try:
        if asyncio.get_running_loop() is loop:
            return None  # already on it (a consumer or an async view): plain async_to_sync would deadlock
    except RuntimeError:
        pass
    return loop


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the ASGI server when called from a sync view it runs, else None."""

    async def running() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    try:
        loop = async_to_sync(running)()
    except RuntimeError:
        return None
    if not loop.is_running():
        return None
    remember_server_loop(loop)
    return loop


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _publish_loop(layer)
    if loop is not None:
        asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(PUBLISH_TIMEOUT_SECONDS)
    else:
        async_to_sync(layer.group_send)(group, message)


def publish(groups: list[str], event_type: str, data: dict[str, Any]) -> None:
    message = {"type": event_type, "data": data}
    for group in groups:
        try:
            _send(group, message)
        except (RedisError, OSError, TimeoutError) as exc:  # the layer is unreachable: an outage, not a bug
            log.warning("could not publish %s to %s: %s: %s", event_type, group, type(exc).__name__, exc)
        except Exception:  # anything else is a bug, but must not stop training either
            log.warning("could not publish %s to %s", event_type, group, exc_info=True)


def publish_progress(run_id: int, data: dict[str, Any]) -> None:
    publish([run_group(run_id)], "run.progress", {"run": run_id, **data})


def publish_lifecycle(run_id: int, data: dict[str, Any]) -> None:
    publish([run_group(run_id), ALL_RUNS_GROUP], "run.lifecycle", {"run": run_id, **data})
