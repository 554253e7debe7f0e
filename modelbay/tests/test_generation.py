"""The per-process cache rebuilt on the shared generation token."""

import pytest
from django.core.cache import cache
from rest_framework.exceptions import AuthenticationFailed

from accounts import services as account_services
from accounts.authentication import authenticate_key
from accounts.models import ApiKey
from modelbay.core import generation
from modelbay.core.generation import GENERATION_KEY, GenerationCache


class Loader:
    def __init__(self, values: dict):
        self.values = values
        self.calls: list = []

    def __call__(self, key):
        self.calls.append(key)
        return self.values.get(key)


def test_a_value_is_loaded_once_per_token_and_again_when_the_token_moves():
    load = Loader({"a": 1})
    values = GenerationCache(load)
    assert [values.get("a", gen="t1") for _ in range(3)] == [1, 1, 1]
    assert load.calls == ["a"]
    load.values["a"] = 2
    assert values.get("a", gen="t2") == 2
    assert load.calls == ["a", "a"]


def test_missing_values_are_kept_only_when_asked():
    kept, not_kept = Loader({}), Loader({})
    kept_cache = GenerationCache(kept)
    not_kept_cache = GenerationCache(not_kept, keep_missing=False)
    for _ in range(3):
        assert kept_cache.get("x", gen="t") is None
        assert not_kept_cache.get("x", gen="t") is None
    assert (len(kept.calls), len(not_kept.calls)) == (1, 3)


def test_a_value_that_is_no_longer_good_is_loaded_again_under_the_same_token():
    load = Loader({"a": {"fresh": False}})
    values = GenerationCache(load, still_good=lambda value: value["fresh"])
    values.get("a", gen="t")
    values.get("a", gen="t")
    assert len(load.calls) == 2


def test_the_cache_holds_at_most_max_entries():
    load = Loader({n: n for n in range(10)})
    values = GenerationCache(load, max_entries=4)
    for n in range(10):
        values.get(n, gen="t")
    assert len(values._entries) <= 4


def test_a_missing_token_is_replaced_by_a_new_one_never_the_same_twice():
    cache.delete(GENERATION_KEY)
    first = generation.current()
    assert first and generation.current() == first  # set once, then read
    cache.delete(GENERATION_KEY)
    assert generation.current() not in ("", first)


@pytest.mark.django_db
def test_a_revoked_key_stays_revoked_when_the_token_is_evicted_before_and_after(organization, user_factory):
    # Loaded while the cache held no token; revoked; the token evicted again (a file cache
    # that culls, a flushed Redis): the key must not come back to life.
    api_key, full_key = account_services.api_key_create(organization=organization, name="k", created_by=user_factory())
    cache.delete(GENERATION_KEY)
    assert authenticate_key(full_key, gen=generation.current()).api_key_id == api_key.pk
    account_services.api_key_revoke(api_key=ApiKey.objects.get(pk=api_key.pk))
    cache.delete(GENERATION_KEY)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        authenticate_key(full_key, gen=generation.current())
