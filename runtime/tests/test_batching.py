"""Dynamic micro-batching: the Batcher itself, and concurrent requests to a real runtime."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from runtime.batching import Batcher
from runtime.errors import InvalidInput

from .conftest import start_runtime


def _double(calls: list):
    def run(feeds):
        calls.append({k: v.shape for k, v in feeds.items()})
        x = feeds["x"]
        if np.any(x < 0):
            raise InvalidInput("negative input")
        return [x * 2, x.sum(axis=1)]

    return run


async def _submit_all(batcher: Batcher, arrays: list[np.ndarray]):
    """All requests in one event-loop turn, as concurrent handlers would."""
    return await asyncio.gather(*(batcher.run({"x": a}, a.shape[0]) for a in arrays), return_exceptions=True)


def test_one_run_for_concurrent_requests():
    calls: list = []
    batcher = Batcher(_double(calls), probe_every=1)
    arrays = [np.full((i + 1, 3), float(i)) for i in range(5)]
    results = asyncio.run(_submit_all(batcher, arrays))
    assert calls == [{"x": (15, 3)}]
    for a, (doubled, sums) in zip(arrays, results):
        np.testing.assert_array_equal(doubled, a * 2)
        np.testing.assert_array_equal(sums, a.sum(axis=1))
    assert (batcher.batches, batcher.batched_requests) == (1, 5)


def test_single_request_runs_alone():
    calls: list = []
    batcher = Batcher(_double(calls), probe_every=1)
    (result,) = asyncio.run(_submit_all(batcher, [np.ones((2, 3))]))
    assert calls == [{"x": (2, 3)}]
    np.testing.assert_array_equal(result[0], np.full((2, 3), 2.0))


def test_different_shapes_are_not_merged():
    calls: list = []
    batcher = Batcher(_double(calls), probe_every=1)
    arrays = [np.ones((1, 3)), np.ones((1, 4)), np.ones((2, 3)), np.ones((1, 3), dtype=np.float32)]
    results = asyncio.run(_submit_all(batcher, arrays))
    assert sorted(c["x"] for c in calls) == [(1, 3), (1, 4), (3, 3)]
    for a, (doubled, _) in zip(arrays, results):
        np.testing.assert_array_equal(doubled, a * 2)
        assert doubled.dtype == a.dtype


def test_failing_batch_falls_back_to_single_runs():
    calls: list = []
    batcher = Batcher(_double(calls), probe_every=1)
    arrays = [np.ones((1, 3)), -np.ones((1, 3)), np.full((1, 3), 3.0)]
    ok1, bad, ok2 = asyncio.run(_submit_all(batcher, arrays))
    assert isinstance(bad, InvalidInput)
    np.testing.assert_array_equal(ok1[0], [[2, 2, 2]])
    np.testing.assert_array_equal(ok2[0], [[6, 6, 6]])
    assert len(calls) == 4  # the batch, then each request alone


def test_outputs_without_one_row_per_input_row_fall_back():
    calls: list = []

    def run(feeds):
        calls.append(feeds["x"].shape)
        return [feeds["x"].sum(keepdims=True)]  # aggregates across rows: shape [1]

    batcher = Batcher(run, probe_every=1)
    results = asyncio.run(_submit_all(batcher, [np.ones((1, 2)), np.full((1, 2), 2.0)]))
    assert [r[0].ravel().tolist() for r in results] == [[2.0], [4.0]]
    assert calls == [(2, 2), (1, 2), (1, 2)]


def test_max_rows_bounds_a_batch():
    calls: list = []
    batcher = Batcher(_double(calls), max_rows=4, probe_every=1)
    results = asyncio.run(_submit_all(batcher, [np.ones((2, 1)) * i for i in range(5)]))
    assert [c["x"] for c in calls] == [(4, 1), (4, 1), (2, 1)]
    assert [r[0][:, 0].tolist() for r in results] == [[2.0 * i] * 2 for i in range(5)]


def test_adaptive_direct_runs_when_alone_and_probes_for_concurrency():
    calls: list = []
    batcher = Batcher(_double(calls), probe_every=4, singletons_to_direct=2)

    async def main():
        # one request at a time: direct runs, a queued probe every 4th request
        for _ in range(8):
            await batcher.run({"x": np.ones((1, 2))}, 1)
        assert len(calls) == 8 and batcher.batches == 0
        # concurrency: the next probe finds company and turns queueing on
        for _ in range(3):
            await asyncio.gather(*(batcher.run({"x": np.ones((1, 2))}, 1) for _ in range(5)))
        return batcher.batches

    assert asyncio.run(main()) == 3
    # first burst: 3 direct runs, then the probe batches with the rest of its turn;
    # later bursts are batched whole
    assert calls[8:] == [{"x": (1, 2)}] * 3 + [{"x": (2, 2)}, {"x": (5, 2)}, {"x": (5, 2)}]


# --- against a real runtime ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rt(digits_onnx_dir, tmp_path_factory):
    runtime = start_runtime(digits_onnx_dir, tmp_path_factory.mktemp("batch-rt"))
    yield runtime
    runtime.stop()


def test_concurrent_requests_get_their_own_answers(rt, digits):
    expected = digits.clf.predict(digits.X[:300])

    async def main():
        async with httpx.AsyncClient(base_url=rt.url, timeout=30,
                                     limits=httpx.Limits(max_connections=32)) as client:
            async def one(i):
                if i % 3 == 0:  # OIP, nested data
                    r = await client.post("/v2/models/model/infer", json={
                        "id": str(i),
                        "inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32",
                                    "data": [digits.X[i].tolist()]}],
                        "outputs": [{"name": "label"}],
                    })
                    body = r.json()
                    assert body["id"] == str(i)
                    return body["outputs"][0]["data"][0]
                if i % 7 == 0:  # a bad request among good ones
                    r = await client.post("/predict", json={"inputs": [[1.0, 2.0]]})
                    assert r.status_code == 422
                    return None
                rows = digits.X[i : i + 2] if i % 2 else digits.X[i : i + 1]
                r = await client.post("/predict", json={"inputs": rows.tolist()})
                assert r.status_code == 200, r.text
                return r.json()["outputs"][0]["label"]

            return await asyncio.gather(*(one(i) for i in range(300)))

    results = asyncio.run(main())
    for i, got in enumerate(results):
        if got is not None:
            assert got == expected[i], i


def test_batching_can_be_disabled(digits_onnx_dir, rt_tmp, digits):
    runtime = start_runtime(digits_onnx_dir, rt_tmp, env={"MODELBAY_RUNTIME_BATCHING": "0"})
    try:
        r = runtime.client.post("/predict", json={"inputs": digits.X[:5].tolist()})
        assert [o["label"] for o in r.json()["outputs"]] == digits.clf.predict(digits.X[:5]).tolist()
    finally:
        runtime.stop()
