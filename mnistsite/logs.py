"""Logs operators can search: the request, run and version a line belongs to, and one JSON object a line.

``LOG_FORMAT=json`` (default ``text``) makes every line of the root logger one JSON object:
``{"time", "level", "logger", "message", "request_id", "run_id", "version_id", "process", "exc_info"?}``.
The ids come from context variables: ``request_id`` set by ``mnistsite.middleware.RequestIdMiddleware``
for the length of a request, ``run_id`` and ``version_id`` by the code that trains or serves one
(``bind(run_id=...)``). They are context variables, so each request thread (and asyncio task) has its own.

Errors go to Sentry only when ``SENTRY_DSN`` is set (``mnistsite.apps.init_sentry``, at start of every
process); without it sentry_sdk is never initialised and nothing is sent anywhere.
"""
from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)
version_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("version_id", default=None)

_VARS = {"request_id": request_id, "run_id": run_id, "version_id": version_id}


@contextmanager
def bind(**values: Any) -> Iterator[None]:
    """Within the block, log lines carry these ids (``request_id``, ``run_id``, ``version_id``)."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def request_done(**kwargs: Any) -> None:
    """``request_finished``: the thread's next log lines belong to no request."""
    request_id.set(None)


class ContextFilter(logging.Filter):
    """Puts the context's ids on every record (``%(request_id)s`` in a text format works too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the ids always present (null when they do not apply)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name, var in _VARS.items():
            entry[name] = getattr(record, name, var.get())
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The settings' LOGGING for ``LOG_FORMAT`` ``text`` or ``json``."""
    formatter = ({"()": "mnistsite.logs.JsonFormatter"} if log_format == "json"
                 else {"format": "%(message)s"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "mnistsite.logs.ContextFilter"}},
        "formatters": {"default": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level},
    }

