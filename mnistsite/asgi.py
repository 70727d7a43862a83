"""ASGI entry point: HTTP through Django; WebSockets (the live training dashboard) through Channels.

HTTP requests run on a small pool of long-lived threads, each in one call from middleware to view
(``mnistsite.handlers.ThreadPoolASGIHandler``, ``HTTP_THREADS`` of them, default 2 on two cores or
more), not through Django's ``ASGIHandler``, which hands every synchronous middleware and view to a
thread and back.
Sockets get the session's user (``AuthMiddlewareStack``) and must come from a page of an allowed host
(``AllowedHostsOriginValidator``).
"""
import os

import django
from twisted.web import http as twisted_http

# Daphne takes reason phrases from Twisted's table, which lacks 429 ("429 Unknown Status" otherwise).
twisted_http.RESPONSES.setdefault(429, b"Too Many Requests")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")

django.setup(set_prefix=False)

# These need Django set up first.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

import dashboard.routing  # noqa: E402
from mnistsite.handlers import ThreadPoolASGIHandler, http_threads  # noqa: E402
from training.policy_schedule import start_policy_scheduler  # noqa: E402
from training.reaper import start_reaper  # noqa: E402

application = ProtocolTypeRouter({
    "http": ThreadPoolASGIHandler(threads=http_threads()),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(dashboard.routing.websocket_urlpatterns))),
})

# A serving process fails runs whose worker went silent: at start, then every TRAINING_REAP_SECONDS.
start_reaper()
# The retraining policy is checked here when no Celery beat does it (RETRAIN_POLICY_SCHEDULER=thread).
start_policy_scheduler()
