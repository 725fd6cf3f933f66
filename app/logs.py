"""Structured logging: one JSON object per line (or a readable line on a terminal),
stable event names, a request id.

Call sites log an event name and put the data in `extra={"fields": {...}}`. Values are
JSON-encoded, so control characters from hostile input (reports, DNS) cannot forge log
lines. `request_id` is a context variable set by the HTTP middleware.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = ""
        if isinstance(fields, dict):
            extra = " " + " ".join(
                f"{k}={orjson.dumps(v, default=str).decode()}" for k, v in fields.items()
            )
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr) in `fmt`: `json`, `text`, or `auto` (text on a terminal,
    where a person reads it; JSON anywhere else, where a program does)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries narrate their internals at INFO; operators need their warnings only.
    for name in ("pgserver", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # uvicorn's own access log duplicates ours and is unstructured.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
