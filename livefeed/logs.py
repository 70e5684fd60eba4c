"""Logging: one line per event that matters, plain or JSON (``LIVEFEED_LOG_JSON``)."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

_SECRETS = re.compile(
    r"(token=)[^&\s\"']+|(Bearer\s+)[^\s\"']+|(\"token\"\s*:\s*\")[^\"]*", re.IGNORECASE
)


def redact(text: str) -> str:
    """Hide subscriber tokens and publish keys wherever a line would carry them (query
    strings in access logs, Authorization values, an `auth` frame that websockets logs
    at debug level)."""
    return _SECRETS.sub(lambda m: next(g for g in m.groups() if g) + "[redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(level: str = "info", json: bool = False) -> dict[str, Any]:
    """Set up root logging and return a uvicorn ``log_config`` that matches it."""
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if json else plain)
    handler.addFilter(RedactSecrets())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's loggers propagate to ours instead of installing their own handlers.
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level.upper()}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
