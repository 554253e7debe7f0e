"""The project's ground floor: what every app may use and that uses none of them.

Settings parsers (``env``), the JSON error contract and domain errors (``errors``), the
per-process cache rebuilt on a shared generation token (``generation``), Django's cache
going on without Redis while it is away (``cache``), and the embedded Celery broker
(``broker``). Nothing here imports an app of the project.
"""
