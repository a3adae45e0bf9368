"""One log format for the whole process, uvicorn's loggers included.

Every record is one line on stderr stamped with the date, time and time zone (ISO 8601
with offset). `text`: `<time> <LEVEL> <logger>: <message> key=value ...`; `json`: one
object per line with `time`, `level`, `logger`, `message` and the record's fields.
Fields travel as `extra={"fields": {...}}` (see `audit`): structured in JSON, appended
as key=value in text. Configured once per process through `dict_config`, which uvicorn
also applies in each worker it starts.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from datetime import datetime
from typing import Any

import orjson

AUDIT = logging.getLogger("gifting_server.audit")
ACCESS = logging.getLogger("gifting_server.access")
CORE_KEYS = ("time", "level", "logger", "message")
NEEDS_QUOTES = re.compile(r'[\s"=]')


def iso_time(created: float) -> str:
    """2026-11-29T21:40:00.123+00:00, in the machine's time zone."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _text_value(value: Any) -> str:
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if not text or NEEDS_QUOTES.search(text):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{iso_time(record.created)} {record.levelname:<5} {record.name}: {record.getMessage()}"
        )
        fields = fields_of(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line[key if key not in CORE_KEYS else f"field_{key}"] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is when a line is written, not as it was when the
    handler was made (as logging's own last-resort handler does): whoever swaps
    stderr (a test runner capturing output, a supervisor) may close the old one."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def dict_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """For `logging.config.dictConfig` and uvicorn's `log_config`: one stderr handler on
    the root logger; uvicorn's loggers lose their own handlers and propagate to it."""
    formatter = FORMATTERS[log_format]
    uvicorn_logger = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "()": f"{__name__}.CurrentStderr",
                "formatter": "line",
            }
        },
        "loggers": {
            "uvicorn": uvicorn_logger,
            "uvicorn.error": uvicorn_logger,
            "uvicorn.access": uvicorn_logger,
            "uvicorn.asgi": uvicorn_logger,
            # A line per outgoing webhook request is noise: the endpoint's attempts
            # (GET /v1/webhooks) and the deliveries counter say how each went.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


def configure(log_format: str = "text", level: str = "INFO") -> None:
    logging.config.dictConfig(dict_config(log_format, level))
    skip_unused_record_attributes()


def skip_unused_record_attributes() -> None:
    """No line shows the caller's file, thread or process: not looking them up makes
    each record cheaper (the logging HOWTO's "Optimization"), the access line of every
    request included."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def audit(action: str, **fields: Any) -> None:
    """One business event (a payment, a cash-out, a stream's start or end, a refused
    signature) on `gifting_server.audit`. Never pass a token or a secret."""
    if AUDIT.isEnabledFor(logging.INFO):
        AUDIT.info(action, extra={"fields": fields})
