"""Errors as the console's users read them: what is wrong, without the server's folders."""

import re

# An absolute path of the server's (``/srv/data/artifacts/ab/model.onnx``, in a traceback's
# ``File "/usr/lib/..."`` too), but not a URL's path: a slash after a word, ':' or '/' is not one.
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/\"':,]+/)+(?=[^\s/\"':,]+)")


def without_server_paths(text: str) -> str:
    """``text`` with each server path cut to its file's name: where the server keeps its
    files is none of the user's business (and a hint for an attacker)."""
    return _SERVER_PATH.sub("", text or "")


def user_message(error) -> str:
    """A domain error's detail as the console shows it (on a form or in a message)."""
    return without_server_paths(str(error.detail))
