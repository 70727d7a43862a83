"""ASGI entry point: HTTP through Django; WebSockets (the live training dashboard) through Channels.

Sockets get the session's user (``AuthMiddlewareStack``) and must come from a page of an allowed host
(``AllowedHostsOriginValidator``).
"""
import os

from django.core.asgi import get_asgi_application
from twisted.web import http as twisted_http

# Daphne takes reason phrases from Twisted's table, which lacks 429 ("429 Unknown Status" otherwise).
twisted_http.RESPONSES.setdefault(429, b"Too Many Requests")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")

django_asgi_app = get_asgi_application()

# These need Django set up first.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

import dashboard.routing  # noqa: E402
from training.reaper import start_reaper  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(dashboard.routing.websocket_urlpatterns))),
})

# A serving process fails runs whose worker went silent: at start, then every TRAINING_REAP_SECONDS.
start_reaper()
