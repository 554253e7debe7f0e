"""Dynamic micro-batching of inline ONNX runs.

Under concurrency several requests are ready in the same turn of the event
loop. Instead of one session run each, they are queued and run once, in the
next turn, as one batch (inputs concatenated along the first dimension), then
the outputs are split back per request. On this kind of machine a single tiny
onnxruntime run costs far more with cold caches (after the network system
calls between requests) than in a loop, so sharing one run is a large saving;
with a single request in flight requests run directly (see Batcher).

Only requests whose inputs have the same names, dtypes and non-batch
dimensions are merged, and only for models whose every input and output has a
dynamic first (batch) dimension. If a batched run fails, or an output does not
have one row per input row, each request is run on its own instead, so errors
stay attributed to the request that caused them. Batching assumes the rows of
a batch are independent (true of ordinary inference graphs); set
``MODELBAY_RUNTIME_BATCHING=0`` for a model where they are not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

Feeds = dict[str, np.ndarray]


class Batcher:
    """Coalesces ``run(feeds)`` calls made in one event-loop turn.

    Adaptive: queueing costs two extra loop turns, which only pay off when other
    requests are ready too. So while flushes keep finding a single request (say,
    one client at a time) requests run directly, and every ``probe_every``-th
    one is queued as a probe (together with whatever else arrives in its turn);
    a flush that finds several requests switches queueing back on.
    """

    def __init__(self, run: Callable[[Feeds], list], *, max_rows: int = 4096, probe_every: int = 32,
                 singletons_to_direct: int = 4) -> None:
        self._run = run  # feeds -> list of output arrays; raises ApiError
        self._max_rows = max_rows
        self._probe_every = probe_every
        self._singletons_to_direct = singletons_to_direct
        self._pending: list[tuple[Feeds, int, asyncio.Future]] = []
        self._queueing = False
        self._direct_runs = 0
        self._singletons = 0
        self.batches = 0  # statistics, for tests and curiosity
        self.batched_requests = 0

    async def run(self, feeds: Feeds, rows: int) -> list:
        """The outputs for ``feeds`` (``rows`` = its first dimension)."""
        if not self._pending and not self._queueing:
            self._direct_runs += 1
            if self._direct_runs < self._probe_every:
                return self._run(feeds)
            self._direct_runs = 0  # probe: queue this request and the rest of this turn
        return await self.submit(feeds, rows)

    def submit(self, feeds: Feeds, rows: int) -> asyncio.Future:
        """Queue ``feeds`` for the next flush; the future gets its outputs."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((feeds, rows, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if len(pending) > 1:
            self._queueing = True
            self._singletons = 0
        else:
            self._singletons += 1
            if self._singletons >= self._singletons_to_direct:
                self._queueing = False
        try:
            self._flush_pending(pending)
        except BaseException as exc:  # never leave a request waiting forever
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise

    def _flush_pending(self, pending: list) -> None:
        if len(pending) == 1:
            self._run_one(pending[0])
            return
        groups: dict[tuple, list] = {}
        for item in pending:
            key = tuple((name, arr.shape[1:], arr.dtype) for name, arr in item[0].items())
            groups.setdefault(key, []).append(item)
        for items in groups.values():
            # keep batches bounded
            batch: list = []
            rows = 0
            for item in items:
                if batch and rows + item[1] > self._max_rows:
                    self._run_many(batch)
                    batch, rows = [], 0
                batch.append(item)
                rows += item[1]
            self._run_many(batch)

    def _run_one(self, item) -> None:
        feeds, _, future = item
        if future.done():
            return
        try:
            future.set_result(self._run(feeds))
        except Exception as exc:  # ApiError (or a bug): the request's own error
            future.set_exception(exc)

    def _run_many(self, items: list) -> None:
        items = [item for item in items if not item[2].done()]
        if len(items) <= 1:
            for item in items:
                self._run_one(item)
            return
        total = sum(item[1] for item in items)
        try:
            names = list(items[0][0])
            feeds = {name: np.concatenate([item[0][name] for item in items]) for name in names}
            outs = self._run(feeds)
            ok = all(isinstance(o, np.ndarray) and o.ndim and o.shape[0] == total for o in outs)
        except Exception:
            ok = False
        if not ok:
            for item in items:
                self._run_one(item)
            return
        self.batches += 1
        self.batched_requests += len(items)
        start = 0
        for _, rows, future in items:
            end = start + rows
            future.set_result([o[start:end] for o in outs])
            start = end
