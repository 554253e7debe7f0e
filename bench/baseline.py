"""The previous gateway, measured in the same run: a ``git worktree`` of an older commit in
/tmp, whose ``gunicorn modelbay.wsgi`` (the synchronous gateway, before the ASGI one) runs
from there with the bench's own environment (same database, cache and data dir: the old
code reads the same tables, the new tree's migrations being a superset of its own).

Only ``git worktree add`` / ``git worktree remove --force`` touch the repository (its
``.git/worktrees`` bookkeeping); the working tree and its index are never changed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REF = "3fab35e"


def _git(*args: str, timeout: float = 120) -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {(completed.stderr or completed.stdout).strip()}")
    return completed.stdout.strip()


def add_worktree(ref: str) -> tuple[Path, str]:
    """A detached worktree of ``ref`` in a fresh /tmp folder: (its path, the full commit)."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    parent = Path(tempfile.mkdtemp(prefix=f"modelbay-baseline-{commit[:7]}-"))
    path = parent / "tree"
    _git("worktree", "add", "--detach", "--quiet", str(path), commit)
    if not (path / "modelbay" / "wsgi.py").exists():
        remove_worktree(path)
        raise RuntimeError(f"{ref} ({commit[:7]}) has no modelbay/wsgi.py: not a synchronous gateway")
    return path, commit


def remove_worktree(path: Path) -> None:
    """``git worktree remove --force`` and the folder made for it."""
    try:
        _git("worktree", "remove", "--force", str(path))
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def sync_gateway_command(gunicorn: Path, port: int, worker_args: list[str]) -> list[str]:
    """The old tree's web server, as it was run (``worker_args``: ``--workers N`` for sync
    workers, or ``--workers 1 --worker-class gthread --threads 8`` as ``make run`` had)."""
    return [str(gunicorn), "modelbay.wsgi", "--bind", f"127.0.0.1:{port}", *worker_args, "--no-control-socket"]
