"""Webhook delivery: JSON POSTs with a timeout and a few retries.

Failures are returned (and counted), never raised: a dead receiver must not fail a video job or
stall a live stream. :func:`post_json` delivers one message (blocking); :class:`WebhookSender`
delivers a stream of messages from its own thread through a bounded queue that drops the oldest
message when the receiver cannot keep up.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from .errors import InvalidParameterError

log = logging.getLogger(__name__)

JsonObject = Mapping[str, object]


def validate_url(url: str) -> str:
    """An absolute http(s) URL, or :class:`InvalidParameterError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidParameterError(f"webhook URL must be an absolute http(s) URL, got {url!r}")
    return url


def post_json(url: str, payload: JsonObject, *, timeout_s: float = 10.0, attempts: int = 3,
              backoff_s: float = 1.0, stop: threading.Event | None = None,
              client: httpx.Client | None = None) -> str | None:
    """POST ``payload`` as JSON; None when a 2xx answer came, else the last failure's reason.

    Retries ``attempts`` times in all, waiting ``backoff_s`` doubled each time (cut short by
    ``stop``).
    """
    reason = "not attempted"
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    try:
        for attempt in range(attempts):
            try:
                r = http.post(url, json=payload, timeout=timeout_s)
                if 200 <= r.status_code < 300:
                    return None
                reason = f"HTTP {r.status_code} from {url}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__} posting to {url}: {exc}"
            if attempt + 1 < attempts:
                delay = backoff_s * 2 ** attempt
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    threading.Event().wait(delay)
    finally:
        if own:
            http.close()
    return reason


class WebhookSender:
    """Posts messages to one URL from a worker thread; at most ``max_queue`` waiting (the
    oldest is dropped beyond that). ``delivered``, ``failed``, ``dropped`` and ``last_error``
    say how it went."""

    def __init__(self, url: str, *, max_queue: int = 1000, timeout_s: float = 5.0,
                 attempts: int = 2, name: str = "webhook") -> None:
        self.url = validate_url(url)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: collections.deque[JsonObject] = collections.deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, payload: JsonObject) -> None:
        """Queue a message (never blocks)."""
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(payload)
            self._cond.notify()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while True:
                with self._cond:
                    while not self._queue and not self._stop.is_set():
                        self._cond.wait()
                    if not self._queue:
                        return
                    payload = self._queue.popleft()
                reason = post_json(self.url, payload, timeout_s=self.timeout_s,
                                   attempts=self.attempts, stop=self._stop, client=client)
                if reason is None:
                    self.delivered += 1
                else:
                    self.failed += 1
                    self.last_error = reason
                    log.warning("webhook delivery failed: %s", reason)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop after the queued messages are sent (or ``timeout_s`` passed)."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
        self._thread.join(timeout_s)
