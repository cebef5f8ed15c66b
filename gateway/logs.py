"""Log output: text lines for a person at a terminal, or one JSON object per line.

GATEWAY_LOG_FORMAT=json makes every record a JSON line: the access log's (one per
request, its fields as keys, see AccessLogger) and the application's warnings and
errors alike, each with the id of the request it was written for, when there is one.
Nothing is added to what text mode writes, so neither mode can show a secret the
other would not (credentials in URLs are redacted before they reach a record).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.access_log import quiet_credential_loggers
from gateway.request_id import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps records with the id of the request being handled (a context variable).

    On the handler, so that it runs in the thread and task that wrote the record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "pid", "message", "request_id", ...}` on one line.

    Access records add their `access` fields (method, route, path, status, bytes,
    duration_ms, principal, request_id, remote, user_agent); a record with an
    exception adds `exception`, the traceback as text.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line["message"] = f"{access['method']} {access['path']} {access['status']}"
            line.update(access)
        else:
            line["message"] = record.getMessage()
            request_id = getattr(record, "request_id", None)
            if request_id is not None:
                line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # ASCII only: control characters and anything else a client sent come out escaped.
        return json.dumps(line, ensure_ascii=True, default=str)


def log_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) writing `log_format` lines with request ids."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str, log_format: str) -> None:
    """The root logger of a gateway process: one handler, the level and format chosen."""
    logging.basicConfig(level=level.upper(), handlers=[log_handler(log_format)])
    quiet_credential_loggers()
