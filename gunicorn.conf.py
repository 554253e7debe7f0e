"""gunicorn's settings file, read from the working directory by every gunicorn started in
the repository's root (make run, the image, compose, the tests and the benches): what is
served and by which workers, and Prometheus' figures shared between the web processes
(inference.observability). The command lines say only where to bind and how many workers
(``--workers``, else ``WEB_CONCURRENCY``)."""

import os
import shutil

# One ASGI application serves the whole site (modelbay/asgi.py: the asynchronous gateway in
# front of Django), each worker an event loop: uvicorn with uvloop and httptools.
wsgi_app = "modelbay.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
# A worker told to stop (a restart, a deploy of the site) finishes its calls in flight
# first; the longest a call may take is a service's timeout_s, at most MODELBAY_MAX_TIMEOUT_S.
graceful_timeout = int(os.environ.get("MODELBAY_MAX_TIMEOUT_S", "900")) + 5


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
