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

Limits, per server process (sockets are counted where they are held): one client (``mnistsite.clients``:
the socket's peer, or the hop a trusted proxy added; an IPv6 client by its /64) holds at most
``DASHBOARD_MAX_SOCKETS_PER_CLIENT`` sockets, the process at most ``DASHBOARD_MAX_SOCKETS``. One more is
accepted, told ``too_many_sockets_from_client`` or ``too_many_sockets`` and closed with code 4013 ("try
again later"). Staff's sockets are never refused by either limit (they count in the process's total),
so a flood of anonymous sockets cannot lock staff out of the dashboard.

When the channel layer (Redis) cannot be reached, a handshake is accepted, told
``{"type": "error", "code": "live_updates_unavailable"}`` and closed with code 4013; a socket whose layer
fails later is closed the same way. The server logs one line (at most once a minute), not a traceback;
sockets opened once Redis is back work again.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from mnistsite.clients import client_key_from_scope
from mnistsite.errors import ApplicationError
from training.events import ALL_RUNS_GROUP, remember_server_loop, run_group
from training.models import TrainingRun
from training.services import training_run_cancel

from . import selectors
from .encoding import finite
from .params import parse_run_id

log = logging.getLogger(__name__)

CLOSE_UNKNOWN_RUN = 4404
CLOSE_TRY_AGAIN_LATER = 4013  # like 1013 "try again later" (servers may only send 1000 or 3000-4999)
# What the channel layer raises when Redis is down or unreachable (TimeoutError and ConnectionError are OSErrors).
CHANNEL_LAYER_ERRORS = (RedisError, OSError)
LAYER_WARN_EVERY_SECONDS = 60.0


class SocketCount:
    """Dashboard sockets open in this process (all consumers run on the server's one event loop): in all,
    and per client (staff's sockets count only in the total)."""

    open = 0
    by_client: Counter[str] = Counter()


class _LayerWarning:
    last = float("-inf")
    since = 0  # failures since the last line


def _warn_layer_down(exc: BaseException) -> None:
    _LayerWarning.since += 1
    now = monotonic()
    if now - _LayerWarning.last >= LAYER_WARN_EVERY_SECONDS:
        log.warning("dashboard socket closed: the channel layer is unavailable (%s: %s); %d socket(s) refused or "
                    "closed since the last warning", type(exc).__name__, exc, _LayerWarning.since)
        _LayerWarning.last = now
        _LayerWarning.since = 0

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
    client: str | None = None  # the client as counted (mnistsite.clients); None for staff (not counted per client)
    accepted = False
    disconnected = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except CHANNEL_LAYER_ERRORS as exc:
            # Joining a group or waiting for events failed: Redis is down. Closed with a reason, not a 500.
            _warn_layer_down(exc)
            if not self.disconnected:
                await self._close_unavailable(send)
        finally:
            self._uncount()

    async def _close_unavailable(self, send: Any) -> None:
        try:
            if not self.accepted:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps({
                "type": "error", "code": "live_updates_unavailable",
                "message": "Live updates are unavailable right now; try again later."})})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
        except Exception:  # noqa: BLE001 - the client went away meanwhile: nothing left to tell it
            pass

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    def _uncount(self) -> None:
        if self.counted:
            SocketCount.open -= 1
            if self.client is not None:
                SocketCount.by_client[self.client] -= 1
                if SocketCount.by_client[self.client] <= 0:
                    del SocketCount.by_client[self.client]
            self.counted = False

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        staff = self.staff
        client = None if staff else client_key_from_scope(self.scope)
        per_client = settings.DASHBOARD_MAX_SOCKETS_PER_CLIENT
        if client is not None and per_client and SocketCount.by_client[client] >= per_client:
            await self.refuse("too_many_sockets_from_client", "You have as many dashboard sockets open as one client "
                              "may; close some, or try again later.", limit=per_client)
            return
        if not staff and SocketCount.open >= settings.DASHBOARD_MAX_SOCKETS:
            await self.refuse("too_many_sockets", "This server holds as many dashboard sockets as it may; "
                                                  "try again later.", limit=settings.DASHBOARD_MAX_SOCKETS)
            return
        SocketCount.open += 1
        if client is not None:
            SocketCount.by_client[client] += 1
        self.client = client
        self.counted = True
        remember_server_loop(asyncio.get_running_loop())  # runs published from any thread reach this socket
        await super().websocket_connect(message)

    async def refuse(self, code: str, message: str, **extra: Any) -> None:
        """Refused cleanly, before joining any group: the client is told why and may retry later or elsewhere."""
        self.groups = []
        await self.accept()
        await self.send_json({"type": "error", "code": code, "message": message, **extra})
        await self.close(code=CLOSE_TRY_AGAIN_LATER)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self.disconnected = True
        self._uncount()
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
