"""The service's access log: one JSON line per request (time, status, latency, sizes, refusal reason), never patient data."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOGGER_NAME = "zoidberg.access"
# Why a request got no prediction, by status: a fixed phrase, never the client's text (an upload's name may name a patient).
STATUS_REASONS = {
    400: "unreadable request", 401: "no API key", 403: "wrong API key", 404: "no such endpoint", 405: "method not allowed",
    413: "body too large", 415: "not an image type", 422: "unreadable image", 500: "service failure", 503: "queue full",
}
# A rotated log keeps this many files of ROTATE_BYTES each.
ROTATE_BYTES = 10 * 1024**2
ROTATE_KEEP = 5


def access_entry(*, method: str, path: str, status: int, seconds: float, request_bytes: int, response_bytes: int,
                 refusal: str | None = None) -> dict:
    """One request's line: what an operator needs to watch the service, and nothing that names a patient.

    Args:
        method: The HTTP method.
        path: The path only: a query string may carry a name or a key, so it is never logged.
        status: The answer's status code.
        seconds: Time from the request's arrival to the answer's last byte.
        request_bytes: The request body's size (its Content-Length, or 0).
        response_bytes: The answer body's size.
        refusal: Why the film got no diagnosis (the gate's reason), when it was refused.

    Returns:
        {"time", "method", "path", "status", "latency_ms", "request_bytes", "response_bytes", "reason"}.
    """
    reason = refusal if status < 400 else STATUS_REASONS.get(status, f"status {status}")
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "method": method, "path": path, "status": status, "latency_ms": round(seconds * 1000, 1),
        "request_bytes": request_bytes, "response_bytes": response_bytes, "reason": reason,
    }


class AccessLogMiddleware:
    """A pure ASGI middleware (it never buffers a body) that logs every HTTP request's access_entry."""

    def __init__(self, app, logger: logging.Logger | None = None):
        self.app = app
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "bytes": 0}
        scope.setdefault("state", {})

        async def counting_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length", b"0")
            entry = access_entry(
                method=scope.get("method", ""), path=scope.get("path", ""), status=state["status"], seconds=time.perf_counter() - start,
                request_bytes=int(declared) if declared.isdigit() else 0, response_bytes=state["bytes"],
                refusal=scope["state"].get("refusal"),
            )
            self.logger.info(json.dumps(entry))


def configure_access_log(path: str | None) -> logging.Logger:
    """The access logger: JSON lines to `path`, rotated (ROTATE_KEEP files of ROTATE_BYTES), or to stderr without one.

    Raises:
        ValueError: When the log's folder does not exist.
    """
    import sys

    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if path:
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise ValueError(f"--access-log: the folder {folder} does not exist.")
        handler: logging.Handler = RotatingFileHandler(path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger
