"""WSGI entry point (production HTTP under Granian); WebSockets are served by the ASGI app."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")
application = get_wsgi_application()

from training.policy_schedule import start_policy_scheduler  # noqa: E402  (needs Django set up first)
from training.reaper import start_reaper  # noqa: E402

# A serving process fails runs whose worker went silent: at start, then every TRAINING_REAP_SECONDS.
start_reaper()
# The retraining policy is checked here when no Celery beat does it (RETRAIN_POLICY_SCHEDULER=thread).
start_policy_scheduler()
