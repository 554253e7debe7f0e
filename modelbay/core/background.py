"""Writes a process makes now and then beside its requests, never inside one.

The gateway counts calls, key use and app usage in memory; a thread of its own stores
them about once a second. A request never waits on the database for them: while another
process holds SQLite's write lock (a deploy, a rollback) only the figures wait.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable

from django.db import close_old_connections

logger = logging.getLogger(__name__)

_flushers: list[Flusher] = []


class Flusher:
    """Runs ``flush`` every ``every_s`` seconds in a daemon thread of this process.

    ``wake()`` is one attribute test on the hot path: it starts the thread the first time in
    each process (again in a forked child, which has no threads). What is left is flushed
    once more at exit.
    """

    def __init__(self, name: str, flush: Callable[[], object], *, every_s: float = 1.0):
        self.name, self._flush, self.every_s = name, flush, every_s
        self._running = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.paused = False  # tests that flush by hand
        os.register_at_fork(after_in_child=self._forget_thread)
        _flushers.append(self)

    def _forget_thread(self) -> None:
        self._running = False
        self._lock = threading.Lock()

    def wake(self) -> None:
        if self._running or self.paused:
            return
        with self._lock:
            if self._running:
                return
            self._running = True
            self._stop = threading.Event()
            threading.Thread(target=self._run, name=f"flush-{self.name}", daemon=True).start()
            atexit.register(self._flush_at_exit)

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.every_s):
            if not self.paused:
                self.flush_now()

    def flush_now(self) -> None:
        """One round; whatever goes wrong, the thread lives on to the next."""
        try:
            self._flush()
        except Exception:  # what was counted is kept for the next round
            logger.warning("background flush %s failed; keeping the counts for the next", self.name, exc_info=True)
        try:
            close_old_connections()
        except Exception:  # the database is away, or not ours to touch (between tests)
            pass

    def _flush_at_exit(self) -> None:
        if self._running and not self.paused:
            self.flush_now()

    def stop(self) -> None:
        """Stop this process's thread (tests); ``wake()`` starts a new one."""
        with self._lock:
            self._stop.set()
            self._running = False


def flush_all() -> None:
    """Flush every flusher this process started: the web server's last step when it stops
    (uvicorn ends a worker by its signal, so ``atexit`` does not run there)."""
    for flusher in _flushers:
        flusher._flush_at_exit()
