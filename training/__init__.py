"""Training runs: what may be asked (``spec.RunSpec``), start and cancel (``services``), the task
body (``execution``), where it runs (``executor``, ``tasks``), dead-run reaping (``reaper``),
progress (``reporting``, ``events``), the retrain API, admin and commands. Builds on ``classifier``
and ``engine``.
"""
