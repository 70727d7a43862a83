"""The project package as an app: its system checks, the beat schedule's seed, error reports.

``ready()`` only wires: the checks register on import (``mnistsite.checks``), the policy's periodic task
is seeded after every ``migrate`` (``post_migrate``), and Sentry is initialised only when ``SENTRY_DSN``
is set (nothing is sent anywhere otherwise).
"""
from __future__ import annotations

import sentry_sdk
from django.apps import AppConfig
from django.conf import settings
from django.core.signals import request_finished
from django.db.models.signals import post_migrate
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from . import checks, logs  # noqa: F401  (checks: registers the layout check)
from .celery import seed_beat_schedule


def init_sentry() -> bool:
    """Report errors to Sentry (Django and Celery integrations) when SENTRY_DSN is set; whether it did."""
    if not settings.SENTRY_DSN:
        return False
    sentry_sdk.init(dsn=settings.SENTRY_DSN, environment=settings.SENTRY_ENVIRONMENT or None,
                    traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE, send_default_pii=False,
                    integrations=[DjangoIntegration(), CeleryIntegration()])
    return True


class MnistsiteConfig(AppConfig):
    name = "mnistsite"
    verbose_name = "mnistsite operations"

    def ready(self) -> None:
        post_migrate.connect(_seed, dispatch_uid="mnistsite.seed_beat_schedule")
        request_finished.connect(logs.request_done, dispatch_uid="mnistsite.logs.request_done")
        init_sentry()


def _seed(sender: AppConfig, **kwargs: object) -> None:
    if sender.label == "django_celery_beat":  # once per migrate, when its tables exist
        seed_beat_schedule(**kwargs)
