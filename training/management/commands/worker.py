"""``python manage.py worker``: start a Celery worker for training runs (wraps ``celery -A mnistsite worker``)."""
from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mnistsite.checks import require_migrated
from mnistsite.serve import require_production_debug_off


class Command(BaseCommand):
    help = (
        "Start a Celery worker that executes training runs (needs CELERY_BROKER_URL or REDIS_URL). One run at a "
        "time per worker by default; start one per machine or per GPU. Options after -- go to celery as they are."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=1, help="runs at the same time (default 1)")
        parser.add_argument("--gpu", action="store_true",
                            help=f"also take runs that ask for CUDA (queue {settings.TRAINING_GPU_QUEUE!r})")
        parser.add_argument("--queues", help=f"comma-separated queues (default {settings.TRAINING_QUEUE!r})")
        parser.add_argument("--hostname", help="worker name, e.g. gpu1@%%h")
        parser.add_argument("--loglevel", default="info")
        parser.add_argument("celery_args", nargs="*", help="further arguments for `celery worker`")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not settings.CELERY_BROKER_URL:
            raise CommandError("No broker configured: set REDIS_URL (or CELERY_BROKER_URL). Without one, runs execute "
                               "in a background thread of the web server and no worker is needed.")
        try:
            require_production_debug_off("manage.py worker")
        except SystemExit as exc:
            raise CommandError(str(exc)) from None
        require_migrated()  # migrations are a release step (`make release`)
        queues = opts["queues"] or settings.TRAINING_QUEUE
        if opts["gpu"]:
            queues += f",{settings.TRAINING_GPU_QUEUE}"
        pool = "solo" if opts["concurrency"] == 1 else "prefork"
        argv = [
            sys.executable, "-m", "celery", "-A", "mnistsite", "worker", "--queues", queues,
            "--pool", pool, "--concurrency", str(opts["concurrency"]), "--loglevel", opts["loglevel"],
        ]
        if opts["hostname"]:
            argv += ["--hostname", opts["hostname"]]
        argv += opts["celery_args"]
        self.stdout.write("starting: " + " ".join(argv[1:]))
        self.stdout.flush()
        os.execv(sys.executable, argv)
