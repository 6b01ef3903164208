"""Logs as JSON lines (``SANDGATE_LOG_FORMAT=json``), each naming the submission and trace
it was written about, if any: one ``grep`` (or a log pipeline's join) from a trace to its
logs.

A message can quote what a sandbox made (a file name, an error): JSON escapes every control
character (no forged line) and, ASCII only, every lone surrogate (no encoding error on the
stream).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

FORMATS = ("text", "json")
TEXT = "%(levelname)s %(name)s: %(message)s"
_about: ContextVar[tuple[str, str] | None] = ContextVar("sandgate_log_about", default=None)


@contextmanager
def about(submission_id: str, trace_id: str) -> Iterator[None]:
    """What this thread (or task) logs meanwhile is about this submission."""
    token = _about.set((submission_id, trace_id))
    try:
        yield
    finally:
        _about.reset(token)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        ids = _about.get()
        if ids is not None:
            entry["submission_id"], entry["trace_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure(log_format: str, level: int) -> None:
    """The root logger's one handler, on stderr, in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
