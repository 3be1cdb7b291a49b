"""Backends that are down, as the HTTP layer answers them: at once, HTTP 503 (Rekognition's
``ThrottlingException``, which AWS clients retry), with one log line per kind of failure and
minute instead of a traceback per request. Nothing is kept: the next request tries the
backend again, so the service recovers by itself when it is back.
"""

from __future__ import annotations

import logging
import threading
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from facesearch.api.errors import error_response
from facesearch.errors import UnavailableError
from facesearch.storage import database

log = logging.getLogger("facesearch.api")

DATABASE_ERRORS = (DBAPIError, PoolTimeoutError)
"""What SQLAlchemy raises when the database is down (among other things)."""


class OutageLog:
    """One warning a minute per kind of failure (``database``, ``milvus``), saying how many
    requests were refused since the last one."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def report(self, exc: UnavailableError) -> None:
        key = (exc.kind, exc.message)
        now = time.monotonic()
        with self._lock:
            last, refused = self._last.get(key, (-self.WINDOW_S, 0))
            if now - last < self.WINDOW_S:
                self._last[key] = (last, refused + 1)
                return
            self._last[key] = (now, 0)
        log.warning("%s unavailable, answering 503: %s%s", exc.kind, exc.message,
                    f" ({refused} more requests refused since the last line)" if refused
                    else "")


OUTAGES = OutageLog()


def classify(exc: BaseException) -> UnavailableError | None:
    """The :class:`UnavailableError` ``exc`` is or means (reported to :data:`OUTAGES`), or
    None for any other error."""
    err = exc if isinstance(exc, UnavailableError) else database.unavailable(exc)
    if err is not None:
        OUTAGES.report(err)
    return err


async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A backend down (:class:`UnavailableError`, or a database error that means it):
    503; any other database error is a bug, re-raised (answered 500 and logged with its
    traceback)."""
    err = classify(exc)
    if err is None:
        raise exc
    return error_response(request, err)
