"""Which version a call goes to: weights, and sticky routing by X-Route-Key."""

from collections import Counter

import pytest

from inference.routing import Route, Target, VersionRoute


def _route(weights: dict[int, int], *, ready=None) -> Route:
    ready = set(weights) if ready is None else ready
    versions = tuple(
        VersionRoute(v, w, (Target(f"i-{v}", f"http://127.0.0.1:{9000 + v}", "zone-a"),) if v in ready else ())
        for v, w in sorted(weights.items())
    )
    return Route(1, 1, "s", versions)


KEYS = [f"user-{n}" for n in range(10_000)]


def test_a_route_key_always_reaches_the_same_version_while_weights_stay():
    route = _route({1: 70, 2: 30})
    first = {key: route.pick_version(route_key=key).version for key in KEYS[:500]}
    for _ in range(3):
        assert {key: route.pick_version(route_key=key).version for key in KEYS[:500]} == first


@pytest.mark.parametrize("weights", [{1: 70, 2: 30}, {1: 90, 2: 10}, {1: 50, 2: 25, 3: 25}, {1: 1, 2: 99}])
def test_route_keys_split_like_the_weights(weights):
    route = _route(weights)
    counts = Counter(route.pick_version(route_key=key).version for key in KEYS)
    for version, weight in weights.items():
        assert abs(counts[version] / len(KEYS) * 100 - weight) < 2, counts


def test_when_the_new_version_grows_keys_only_move_to_it():
    before = _route({1: 90, 2: 10})
    after = _route({1: 75, 2: 25})
    moved = Counter()
    for key in KEYS:
        old, new = before.pick_version(route_key=key).version, after.pick_version(route_key=key).version
        if old != new:
            moved[(old, new)] += 1
    assert set(moved) == {(1, 2)}  # nobody on version 2 is sent back
    assert abs(moved[(1, 2)] / len(KEYS) * 100 - 15) < 2


def test_without_a_key_calls_split_at_random_by_weight():
    route = _route({1: 80, 2: 20})
    counts = Counter(route.pick_version().version for _ in range(10_000))
    assert abs(counts[2] / 100 - 20) < 2.5


def test_versions_without_ready_instances_and_zero_weights_take_no_calls():
    route = _route({1: 60, 2: 40}, ready={1})
    assert {route.pick_version(route_key=key).version for key in KEYS[:200]} == {1}
    route = _route({1: 100, 2: 0})
    assert {route.pick_version(route_key=key).version for key in KEYS[:200]} == {1}
    assert route.pick_version(2).version == 2  # asked for by number (OIP versions/{v}), it still answers


def test_no_ready_version_means_no_route():
    assert _route({1: 100}, ready=set()).pick_version(route_key="k") is None


def test_shadow_versions_get_their_share_of_copies():
    route = _route({1: 100, 2: 0})
    route.versions[1].shadow_percent = 25
    mirrored = sum(bool(route.shadows_for_this_call()) for _ in range(10_000))
    assert abs(mirrored / 100 - 25) < 2.5
    assert all(route.pick_version().version == 1 for _ in range(200))  # the answers still come from 1
