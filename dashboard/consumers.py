"""The dashboard's WebSockets: thin consumers relaying ``training.events`` to browsers.

``/ws/training/`` (``RunsConsumer``) follows every run's lifecycle. On connect it sends
``{"type": "runs", "data": [summary, ...]}`` (the newest runs), then for each change
``{"type": "lifecycle", "data": {"run", "event", "status", ..., "summary": {...}}}`` where ``event`` is
``queued``, ``started``, ``finished``, ``failed``, ``cancelled`` or ``promoted`` (a promoted run sends
``finished``, then ``promoted``).

``/ws/training/<id>/`` (``RunConsumer``) follows one run. On connect it
sends ``{"type": "state", "data": run_state}``, the history so far included, so a late joiner draws the
whole curve; then ``{"type": "progress", "data": {"kind": "start" | "batch" | "epoch" | "evaluate", ...}}``
and the lifecycle messages above; when the run ends, one more ``state`` with its metrics (confusion
matrix, per-class accuracy; the matrix also rendered, as ``confusion_html``), the version it produced
and the promotion decision. An unknown id gets ``{"type": "error", "code": "unknown_run"}`` and the
socket is closed with code 4404.

Batch events are coalesced per connection: at most ``batch_rate`` a second; in between only the latest
is kept and sent when its turn comes, and it is sent before any other message, so the order holds and
the last point of a curve is never lost. Everything else is relayed at once.

Watching is public. Commands (``{"action": "cancel"}`` on a run's socket) are for staff only and go
through the same service as the API; anyone else gets ``{"type": "error", "code": "forbidden"}``.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from mnistsite.errors import ApplicationError
from training.events import ALL_RUNS_GROUP, remember_server_loop, run_group
from training.models import TrainingRun
from training.services import training_run_cancel

from . import selectors
from .encoding import finite
from .params import parse_run_id

CLOSE_UNKNOWN_RUN = 4404
CLOSE_TRY_AGAIN_LATER = 4013  # like 1013 "try again later" (servers may only send 1000 or 3000-4999)


class SocketCount:
    """Dashboard sockets open in this process (all consumers run on the server's one event loop)."""

    open = 0

# What the training services publish as a run's status, and what the dashboard calls that moment.
LIFECYCLE_EVENTS = {
    TrainingRun.Status.QUEUED: "queued",
    TrainingRun.Status.RUNNING: "started",
    TrainingRun.Status.SUCCEEDED: "finished",
    TrainingRun.Status.FAILED: "failed",
    TrainingRun.Status.CANCELLED: "cancelled",
}


class Coalescer:
    """Sends messages in order, batch messages at most once per ``interval`` (the latest one wins)."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], interval: float) -> None:
        self._send = send
        self.interval = interval
        self._pending: dict[str, Any] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def offer(self, message: dict[str, Any]) -> None:
        """A batch message: sent now if its turn has come, else kept until it has (replacing an older one)."""
        async with self._lock:
            wait = self._last + self.interval - monotonic()
            if wait <= 0 and self._pending is None:
                await self._emit(message)
                return
            self._pending = message
            if self._timer is None:
                self._timer = asyncio.create_task(self._flush_later(max(wait, 0.0)))

    async def send(self, message: dict[str, Any]) -> None:
        """Any other message: sent now, after the pending batch message."""
        async with self._lock:
            await self._flush()
            await self._send(message)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = None

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            self._timer = None
            await self._flush()

    async def _flush(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
            self._timer = None
        if self._pending is not None:
            message, self._pending = self._pending, None
            await self._emit(message)

    async def _emit(self, message: dict[str, Any]) -> None:
        self._last = monotonic()
        await self._send(message)


# ---------------------------------------------------------------------------- database reads and writes


@database_sync_to_async
def _runs_snapshot(staff: bool) -> list[dict[str, Any]]:
    return selectors.runs_snapshot(staff=staff)


@database_sync_to_async
def _run_summary(run_id: int, staff: bool) -> dict[str, Any] | None:
    return selectors.run_summary(run_id, staff=staff)


@database_sync_to_async
def _run_state(run_id: int, staff: bool) -> dict[str, Any] | None:
    return selectors.run_state(run_id, staff=staff)


@database_sync_to_async
def _run_cancel(run_id: int, user: Any) -> dict[str, Any]:
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        raise ApplicationError("unknown_run", f"There is no run {run_id}.", status=404)
    training_run_cancel(run=run, by=user)
    return selectors.run_summary(run_id, staff=True) or {}


# ---------------------------------------------------------------------------- consumers


class TrainingConsumer(AsyncJsonWebsocketConsumer):
    """What both sockets share: who is watching, JSON that is always valid, staff-only commands."""

    commands: dict[str, str] = {}  # action -> method name; staff only
    counted = False

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if SocketCount.open >= settings.DASHBOARD_MAX_SOCKETS:
            # Refused cleanly, before joining any group: the client is told why and may retry elsewhere.
            await self.accept()
            await self.error("too_many_sockets", "This server holds as many dashboard sockets as it may; "
                                                 "try again later.", limit=settings.DASHBOARD_MAX_SOCKETS)
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            self.groups = []
            return
        SocketCount.open += 1
        self.counted = True
        remember_server_loop(asyncio.get_running_loop())  # runs published from any thread reach this socket
        await super().websocket_connect(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.counted:
            SocketCount.open -= 1
            self.counted = False
        await super().websocket_disconnect(message)

    @property
    def staff(self) -> bool:
        user = self.scope.get("user")
        return bool(user is not None and user.is_active and user.is_staff)

    async def send_message(self, message: dict[str, Any]) -> None:
        await self.send_json(message)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        try:
            return json.dumps(content, allow_nan=False)
        except ValueError:  # NaN or infinity (a diverging loss): JSON has neither
            return json.dumps(finite(content), allow_nan=False)

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_message({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if not self.staff:
            await self.error("forbidden", "Watching is open to everyone; only staff may send commands.")
            return
        try:
            content = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder follows
            content = None
        if not isinstance(content, dict) or not isinstance(content.get("action"), str):
            await self.error("invalid_message", 'Commands are JSON objects such as {"action": "cancel"}.')
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        action = content["action"]
        handler = self.commands.get(action)
        if handler is None:
            known = ", ".join(sorted(self.commands)) or "none"
            await self.error("unknown_action", f"Unknown action {action!r} (known: {known}).", action=action)
            return
        await getattr(self, handler)(content)

    async def lifecycle_messages(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """A ``run.lifecycle`` event as the dashboard's messages: the moment, and the run's fresh summary."""
        summary = await _run_summary(data["run"], self.staff)
        shown = {key: value for key, value in data.items() if self.staff or key != "worker"}
        event = LIFECYCLE_EVENTS.get(data.get("status"), data.get("status"))
        messages = [{"type": "lifecycle", "data": {**shown, "event": event, "summary": summary}}]
        if data.get("promoted"):
            messages.append({"type": "lifecycle", "data": {**shown, "event": "promoted", "summary": summary}})
        return messages


class RunsConsumer(TrainingConsumer):
    """``/ws/training/``: every run's lifecycle; the run list on connect."""

    groups = [ALL_RUNS_GROUP]

    async def connect(self) -> None:
        # Joined the group before this read (``groups``), so no change falls between the two.
        await self.accept()
        await self.send_message({"type": "runs", "data": await _runs_snapshot(self.staff)})

    async def run_lifecycle(self, event: dict[str, Any]) -> None:
        for message in await self.lifecycle_messages(event["data"]):
            await self.send_message(message)


class RunConsumer(TrainingConsumer):
    """``/ws/training/<id>/``: one run's state on connect, then its progress and lifecycle."""

    batch_rate = 4.0  # batch messages a second, at most, per connection
    commands = {"cancel": "cancel_run"}

    async def connect(self) -> None:
        self.run_id = parse_run_id(self.scope["url_route"]["kwargs"].get("run_id"))
        self.outbox = Coalescer(self.send_json, 1.0 / self.batch_rate)
        await self.accept()
        if self.run_id is not None:
            # Join first, then read: events published in between arrive after the state (the client
            # ignores steps and epochs it already has) instead of being lost.
            group = run_group(self.run_id)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups = [*self.groups, group]  # left again on disconnect
            state = await _run_state(self.run_id, self.staff)
            if state is not None:
                await self.send_message({"type": "state", "data": state})
                return
        await self.error("unknown_run", "There is no such training run.", run=self.run_id)
        await self.close(code=CLOSE_UNKNOWN_RUN)

    async def disconnect(self, code: int) -> None:
        outbox = getattr(self, "outbox", None)
        if outbox is not None:
            outbox.close()

    async def send_message(self, message: dict[str, Any]) -> None:
        await self.outbox.send(message)

    async def run_progress(self, event: dict[str, Any]) -> None:
        data = event["data"]
        message = {"type": "progress", "data": data}
        if data.get("kind") == "batch":
            await self.outbox.offer(message)
        else:
            await self.send_message(message)

    async def run_lifecycle(self, event: dict[str, Any]) -> None:
        data = event["data"]
        for message in await self.lifecycle_messages(data):
            await self.send_message(message)
        if data.get("status") in TrainingRun.FINISHED:
            state = await _run_state(self.run_id, self.staff)
            if state is not None:
                await self.send_message({"type": "state", "data": state})

    async def cancel_run(self, content: dict[str, Any]) -> None:
        try:
            summary = await _run_cancel(self.run_id, self.scope["user"])
        except ApplicationError as exc:
            await self.error(exc.code, exc.message, detail=exc.detail)
            return
        await self.send_message({"type": "ack", "action": "cancel", "data": summary})


class NotFoundConsumer(AsyncJsonWebsocketConsumer):
    """Any other ``/ws/`` path: refused at the handshake, quietly (no error in the server log)."""

    async def connect(self) -> None:
        await self.close()
