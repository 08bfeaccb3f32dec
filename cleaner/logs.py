"""One JSON object per line, with Cloud Logging's ``severity`` and ``message``.

Cloud Run turns each line into a structured entry; fields given as ``extra={"fields": {...}}``
become its JSON payload. Below WARNING goes to stdout, the rest to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_SEVERITY = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=False)


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup(level: str = "INFO", *, stream_split: bool = True) -> None:
    """Route the ``cleaner`` loggers: stdout/stderr split for the function, or all to stderr for
    the command line (whose stdout carries the plan)."""
    logger = logging.getLogger("cleaner")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    formatter = JsonFormatter()
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(formatter)
    if stream_split:
        errors.setLevel(logging.WARNING)
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(formatter)
        out.addFilter(_Below(logging.WARNING))
        logger.addHandler(out)
    logger.addHandler(errors)
    logger.setLevel(level)
    logger.propagate = False


def fields(**values) -> dict:
    """``log.info("…", extra=fields(repository=…))``."""
    return {"fields": values}
