"""WSGI entry point (production HTTP under Granian); WebSockets are served by the ASGI app."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")
application = get_wsgi_application()

from training.reaper import start_reaper  # noqa: E402  (needs Django set up first)

# A serving process fails runs whose worker went silent: at start, then every TRAINING_REAP_SECONDS.
start_reaper()
