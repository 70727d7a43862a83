"""The admin for the model registry: predictions and their labels, model versions with their lifecycle, the
audit log.

Importing the package registers each model's admin (one module each); ``display`` holds the helpers
they share with ``training.admin``.
"""
from . import events, labels, predictions, versions  # noqa: F401  (each registers its ModelAdmin)
