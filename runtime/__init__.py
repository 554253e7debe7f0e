"""Modelbay model runtime: a small, fast OIP v2 / ``/predict`` server for one
model package. Must not import Django.

Run it with ``python -m runtime --model-dir DIR --port P``.
"""

__version__ = "0.1.0"
