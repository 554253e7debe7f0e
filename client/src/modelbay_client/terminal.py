"""What the ``modelbay`` command writes: results on stdout (text for people, JSON with
``--json``), errors and progress on stderr. Progress only where a person watches: never with
``--json``, never when stderr is not a terminal."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from modelbay_client.errors import ApiError, ModelbayError

BAR_WIDTH = 30
SPINNER = "|/-\\"


class Terminal:
    def __init__(self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.shows_progress = not json_mode and self.stderr.isatty()

    def result(self, data: Any, text: str | Callable[[], str]) -> None:
        """The answer: ``data`` as JSON with ``--json``, else ``text`` (made only when needed)."""
        if self.json_mode:
            self.print(json.dumps(data, indent=2))
        else:
            self.print(text if isinstance(text, str) else text())

    def print(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def json_line(self, data: Any) -> None:
        """One JSON object per line, for what streams (followed logs, a watched release)."""
        self.print(json.dumps(data))

    def note(self, text: str) -> None:
        """A message for a person on stderr (never with --json: stdout stays parseable, stderr quiet)."""
        if not self.json_mode:
            print(text, file=self.stderr, flush=True)

    def error(self, error: ModelbayError | str) -> None:
        if self.json_mode:
            data = error.as_dict() if isinstance(error, ApiError) else {"error": str(error)}
            print(json.dumps(data), file=self.stderr, flush=True)
        else:
            print(f"modelbay: error: {error}", file=self.stderr, flush=True)

    @contextmanager
    def progress_line(self) -> Iterator[ProgressLine | None]:
        """A line to show progress on while the block runs, or None where no one watches."""
        line = ProgressLine(self.stderr) if self.shows_progress else None
        try:
            yield line
        finally:
            if line is not None:
                line.finish()


class ProgressLine:
    """One line of stderr rewritten in place: an upload's bar, a wait's state."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.ticks = 0
        self.width = 0

    def show(self, text: str) -> None:
        self.ticks += 1
        self.width = max(self.width, len(text))
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()

    def waiting(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.show(f"{SPINNER[self.ticks % len(SPINNER)]} {text} ({elapsed:.0f} s)")

    def bar(self, label: str, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = round(share * BAR_WIDTH)
        self.show(f"{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%} {_size(done)}/{_size(total)}")

    def finish(self) -> None:
        if self.ticks:
            self.stream.write("\n")
            self.stream.flush()


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns aligned on the widest cell; ``-`` for nothing."""
    if not rows:
        return f"No {headers[0]}s."
    cells = [[str(h).upper() for h in headers]] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def _size(count: float) -> str:
    """Bytes for a person: 950 B, 3.7 kB, 12.5 MB."""
    unit = "B"
    for larger in ("kB", "MB", "GB"):
        if count < 1000:
            break
        count, unit = count / 1000, larger
    return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
