import os
from pathlib import Path

from kombu import Connection

from modelbay.core import broker


def test_a_message_becomes_visible_only_once_whole(tmp_path, monkeypatch):
    """kombu#1551: a poller must never see a message file before it is written."""
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path)}
    visible_before_rename, renames = [], []
    real_replace = os.replace

    def watching_replace(src, dst):
        visible_before_rename.extend(name for name in os.listdir(tmp_path) if name.endswith(".q.msg"))
        assert Path(src).stat().st_size > 0
        renames.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(broker.os, "replace", watching_replace)
    with Connection("modelbay-fs://localhost/", transport_options=options) as connection:
        queue = connection.SimpleQueue("q")
        queue.put({"body": "x" * 20_000})
        message = queue.get(timeout=5)
        message.ack()
    assert len(renames) == 1 and renames[0].endswith(".q.msg")
    assert visible_before_rename == []
    assert message.payload == {"body": "x" * 20_000}
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]
