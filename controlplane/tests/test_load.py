"""The load reports' stores: several processes' reports added up, stale ones ignored, and
a store that is away never failing a publisher."""

import json
import logging
import time

import pytest
import redis
from django.conf import settings

from controlplane import load
from controlplane.load import FileStore, Load, LoadUnknown, RedisStore


@pytest.fixture
def files(tmp_path):
    return FileStore(tmp_path / "load")


@pytest.fixture
def shared_redis():
    """The store on the tests' Redis (emptied before each test by the shared fixtures)."""
    return RedisStore(settings.REDIS_URL)


@pytest.fixture(params=["files", "shared_redis"])
def any_store(request):
    return request.getfixturevalue(request.param)


def test_two_processes_reports_are_added_up(any_store):
    any_store.publish("web-1", {7: (1.5, 2), 8: (0.25, 0)})
    any_store.publish("web-2", {7: (2.0, 1)})

    seven = any_store.read(7)
    assert (seven.in_flight, seven.now, seven.processes) == (3.5, 3, 2)
    assert time.time() - 5 < seven.at <= time.time()
    assert any_store.read_all() == {7: seven, 8: Load(in_flight=0.25, now=0, processes=1, at=any_store.read(8).at)}
    assert any_store.read(9) is None
    assert any_store.read_many([7, 9]) == {7: seven}  # those asked for that were reported


def test_a_process_report_replaces_its_last_one(any_store):
    any_store.publish("web-1", {7: (4.0, 4)})
    any_store.publish("web-1", {7: (1.0, 0)})

    assert any_store.read(7).in_flight == 1.0
    assert any_store.read(7).processes == 1


def test_a_report_three_intervals_old_no_longer_counts(any_store, settings):
    settings.MODELBAY_LOAD_REPORT_S = 0.1
    any_store.publish("gone", {7: (5.0, 5)})
    time.sleep(0.35)
    any_store.publish("alive", {7: (1.0, 1)})

    assert any_store.read(7) == Load(in_flight=1.0, now=1, processes=1, at=any_store.read(7).at)
    time.sleep(0.35)
    assert any_store.read(7) is None
    assert any_store.read_all() == {}


def test_publishing_nothing_writes_nothing(any_store):
    any_store.publish("web-1", {})
    assert any_store.read_all() == {}


# --- the file store (the embedded default) -------------------------------------------------
def test_each_process_has_one_file_replaced_whole(files):
    files.publish("web-1", {7: (1.5, 2)})
    files.publish("web-1", {7: (0.5, 1)})
    files.publish("web-2", {7: (0.5, 1)})

    assert sorted(p.name for p in files.folder.iterdir()) == ["web-1.json", "web-2.json"]  # no leftover .tmp
    assert json.loads((files.folder / "web-1.json").read_text())["loads"] == {"7": [0.5, 1]}


def test_files_of_processes_long_gone_are_removed_by_a_reader(files):
    files.publish("alive", {7: (1.0, 1)})
    stale = {"at": time.time() - load.fresh_s() - 1, "loads": {"7": [3.0, 3]}}
    (files.folder / "stale.json").write_text(json.dumps(stale))
    gone = {"at": time.time() - load.fresh_s() - load._FORGET_AFTER_S - 1, "loads": {"7": [3.0, 3]}}
    (files.folder / "gone.json").write_text(json.dumps(gone))

    assert files.read(7).processes == 1
    assert sorted(p.name for p in files.folder.iterdir()) == ["alive.json", "stale.json"]


def test_an_unwritable_folder_costs_the_report_not_the_caller(tmp_path, caplog):
    (tmp_path / "not-a-folder").write_text("")
    store = FileStore(tmp_path / "not-a-folder" / "load")

    with caplog.at_level(logging.WARNING):
        store.publish("web-1", {7: (1.0, 1)})
        store.publish("web-1", {7: (1.0, 1)})

    assert store.outage.since is not None
    assert len([r for r in caplog.records if "load reports" in r.getMessage()]) == 1  # once while it lasts


def test_the_sites_store_follows_redis_url(settings, tmp_path):
    settings.REDIS_URL = ""
    settings.MODELBAY_RUN_DIR = tmp_path
    load.publish("web-1", {7: (1.0, 1)})

    assert load.read(7).processes == 1
    assert (tmp_path / "load" / "web-1.json").exists()


# --- the Redis store ------------------------------------------------------------------------
def test_redis_holds_a_hash_per_service_that_expires(shared_redis):
    shared_redis.publish("web-1", {7: (1.5, 2)})

    client = redis.Redis.from_url(settings.REDIS_URL)
    fields = client.hgetall("mb:load:7")
    assert list(fields) == [b"web-1"]
    average, now, at = fields[b"web-1"].split()
    assert (float(average), int(now)) == (1.5, 2)
    assert 0 < client.ttl("mb:load:7") <= load.fresh_s() + 3


def test_a_stale_field_is_dropped_from_a_hash_others_keep_alive(shared_redis, settings):
    settings.MODELBAY_LOAD_REPORT_S = 0.1
    shared_redis.publish("gone", {7: (5.0, 5)})
    time.sleep(0.35)
    shared_redis.publish("alive", {7: (1.0, 1)})

    assert shared_redis.read(7).processes == 1
    assert list(redis.Redis.from_url(settings.REDIS_URL).hgetall("mb:load:7")) == [b"alive"]


def test_publishing_while_redis_is_away_does_not_raise_and_reading_says_so(own_redis):
    store = RedisStore(own_redis.url())
    store.publish("web-1", {7: (1.0, 1)})
    assert store.read(7).now == 1

    own_redis.stop()
    started = time.monotonic()
    store.publish("web-1", {7: (2.0, 2)})  # refused: no exception
    assert time.monotonic() - started < 2 * settings.MODELBAY_REDIS_TIMEOUT_S + 1
    assert store.outage.since is not None
    with pytest.raises(LoadUnknown):
        store.read(7)
    with pytest.raises(LoadUnknown):
        store.read_all()

    own_redis.start()  # back, empty: the next report fills it again
    store.publish("web-1", {7: (3.0, 3)})
    assert store.outage.since is None
    assert store.read_all() == {7: Load(in_flight=3.0, now=3, processes=1, at=store.read(7).at)}
