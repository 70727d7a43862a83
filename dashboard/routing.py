"""WebSocket routes of the live training dashboard (mounted by ``mnistsite.asgi``)."""
from django.urls import path, re_path

from . import consumers

websocket_urlpatterns = [
    path("ws/training/", consumers.RunsConsumer.as_asgi(), name="ws-training"),
    # Any id is routed: the consumer answers one that is not a run with an error (code 4404), not a crash.
    re_path(r"^ws/training/(?P<run_id>[^/]+)/$", consumers.RunConsumer.as_asgi(), name="ws-training-run"),
    re_path(r"^ws/", consumers.NotFoundConsumer.as_asgi()),
]
