"""gunicorn's settings file, read from the working directory by every gunicorn started in
the repository's root (make run, the image, compose). Only what the command lines do not
say: Prometheus' figures shared between the web processes (inference.observability)."""

import os
import shutil


def on_starting(server):
    """A fresh folder for the processes' figures: the previous run's are not this run's."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    """A worker gone: its calls in flight are no longer."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
