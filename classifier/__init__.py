"""The model registry and inference: everything a model version goes through.

Models (ModelVersion, Prediction, LifecycleEvent), labelled drawings and the field set
(``drawings``), checkpoint storage (``checkpoints``), evaluation (``evaluation``), the lifecycle
(``lifecycle``) and its gate (``promotion``), serving (``inference``), the predict, registry and
lifecycle API, pages and admin. Builds on ``engine``; knows nothing of training runs.
"""
