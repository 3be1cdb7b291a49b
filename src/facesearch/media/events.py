"""Stream events and where they go: subscribers' bounded queues, JSONL files, snapshots.

A :class:`StreamEvent` is one (track, identity) match of a stream processor. An
:class:`EventHub` fans events out to :class:`Subscription` queues (bounded, the oldest event
dropped for a slow reader; the HTTP API serves them as SSE or WebSocket). With encryption at
rest on, JSONL lines are ``FSE1:`` + base64 of the sealed JSON (:func:`read_jsonl`) and face
snapshots are sealed files ``<event>_<face>.jpg.fse`` (:func:`read_snapshot`);
:func:`facesearch.storage.snapshots.remove_snapshots` removes the snapshots of erased faces.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facesearch.errors import (
    InvalidParameterError,
)
from facesearch.media.candidates import VideoMatch
from facesearch.storage.crypto import Sealer

Gate = Callable[[str], str | None]
"""``actor -> why it may no longer read`` (None: it may)."""



@dataclass(frozen=True)
class StreamEvent:
    """A track of the stream matched an identity of the watchlist (a candidate for review).

    ``identity`` is the best match's user id, else its external id, else its face id. Box
    (x1, y1, x2, y2) in frame pixels; ``frame_timestamp_ms`` counts from the first frame of the
    current connection; ``captured_at``/``emitted_at`` are Unix times (s); ``latency_ms`` is
    frame-to-event. ``snapshot`` is the crop's path relative to the data directory.
    """

    event_id: str
    processor: str
    collection: str
    track_id: int
    identity: str
    match: VideoMatch
    candidates: list[VideoMatch]
    box: tuple[float, float, float, float]
    frame_width: int
    frame_height: int
    frame_timestamp_ms: int
    captured_at: float
    emitted_at: float
    latency_ms: float
    snapshot: str | None = None
    search_id: str | None = None
    """The processor run's search id: review the match as a candidate of it."""

    def to_json(self) -> dict[str, object]:
        """The event as JSON (webhook body, JSONL line, SSE/WebSocket message)."""
        def m(v: VideoMatch) -> dict[str, object]:
            return {"face_id": v.face_id, "external_id": v.external_id, "image_id": v.image_id,
                    "user_id": v.user_id, "similarity": round(v.similarity, 3)}

        return {
            "type": "face_match", "event_id": self.event_id, "processor": self.processor,
            "collection": self.collection, "track_id": self.track_id, "identity": self.identity,
            "similarity": round(self.match.similarity, 3), "match": m(self.match),
            "candidates": [m(c) for c in self.candidates],
            "box": [round(v, 1) for v in self.box], "frame_width": self.frame_width,
            "frame_height": self.frame_height, "frame_timestamp_ms": self.frame_timestamp_ms,
            "captured_at": round(self.captured_at, 3), "emitted_at": round(self.emitted_at, 3),
            "latency_ms": round(self.latency_ms, 1), "snapshot": self.snapshot,
            "search_id": self.search_id,
            "label": "candidate for human review, not an identification",
        }


class Subscription:
    """A subscriber's bounded event queue (the oldest event is dropped when it is full).

    Read it from a thread with :meth:`get`, or from asyncio with :meth:`aget` (give ``loop``
    when subscribing). :meth:`close` ends it; reads then return None.
    """

    def __init__(self, max_queue: int = 256,
                 loop: asyncio.AbstractEventLoop | None = None,
                 actor: str | None = None) -> None:
        if max_queue < 1:
            raise InvalidParameterError("subscriber queue must hold at least 1 event")
        self.actor = actor
        """The access key that opened the feed (it ends when that key is revoked)."""
        self.end_reason: str | None = None
        self._queue: deque[StreamEvent] = deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._loop = loop
        self._wakeup: asyncio.Event | None = None
        self.dropped = 0
        self.closed = False

    def put(self, event: StreamEvent) -> None:
        with self._cond:
            if self.closed:
                return
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(event)
            self._cond.notify_all()
        self._wake()

    def _wake(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            try:
                self._loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def get(self, timeout_s: float | None = None) -> StreamEvent | None:
        """The next event; None after ``timeout_s`` or once closed and drained."""
        with self._cond:
            if not self._queue and not self.closed:
                self._cond.wait(timeout_s)
            return self._queue.popleft() if self._queue else None

    async def aget(self, timeout_s: float | None = None) -> StreamEvent | None:
        """The next event, awaited on the subscription's loop; None on timeout or close."""
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        while True:
            with self._cond:
                if self._queue:
                    return self._queue.popleft()
                if self.closed:
                    return None
                self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout_s)
            except TimeoutError:
                return None

    def close(self, reason: str | None = None, *, discard: bool = False) -> None:
        """End the feed (``discard``: drop the events not yet read, e.g. when the reader's
        key was revoked)."""
        with self._cond:
            if reason is not None and self.end_reason is None:
                self.end_reason = reason
            if discard:
                self._queue.clear()
            self.closed = True
            self._cond.notify_all()
        self._wake()


class EventHub:
    """Fans a processor's events out to its subscribers (kept across stops and starts).
    ``gate`` is asked before each delivery to a subscriber with an actor: a revoked or expired
    key's feed ends instead of receiving the event."""

    def __init__(self, gate: Gate | None = None) -> None:
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self.gate = gate

    def subscribe(self, max_queue: int = 256,
                  loop: asyncio.AbstractEventLoop | None = None,
                  actor: str | None = None) -> Subscription:
        sub = Subscription(max_queue, loop, actor)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
        sub.close()

    def publish(self, event: StreamEvent) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            problem = (self.gate(s.actor) if self.gate is not None and s.actor is not None
                       and not s.closed else None)
            if problem is not None:
                s.close(problem, discard=True)
            if s.closed:
                self.unsubscribe(s)
            else:
                s.put(event)

    def end_for(self, actor: str, reason: str) -> int:
        """End, at once, every feed opened by ``actor``; returns how many."""
        with self._lock:
            subs = [s for s in self._subs if s.actor == actor]
            self._subs.difference_update(subs)
        for s in subs:
            s.close(reason, discard=True)
        return len(subs)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        with self._lock:
            subs, self._subs = list(self._subs), set()
        for s in subs:
            s.close()


SEALED_SUFFIX = ".fse"
"""Suffix of a sealed snapshot (``<event id>_<face id>.jpg.fse``)."""


SEALED_LINE = "FSE1:"
"""Prefix of a sealed JSONL line (then base64 of the sealed JSON)."""


def snapshot_aad(name: str) -> bytes:
    return b"snapshot:" + name.encode()


def seal_line(line: str, sealer: Sealer | None) -> str:
    """A JSONL line as written: the JSON itself, or sealed when encryption at rest is on."""
    if sealer is None:
        return line
    return SEALED_LINE + base64.b64encode(sealer.seal(line.encode(), b"stream-event")).decode()


def read_jsonl(path: Path, sealer: Sealer | None) -> list[dict[str, object]]:
    """The events of a processor's JSONL file (sealed lines opened with ``sealer``)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(SEALED_LINE):
            if sealer is None:
                raise InvalidParameterError(f"{path}: sealed events need the encryption key")
            line = sealer.open(base64.b64decode(line[len(SEALED_LINE):]),
                               b"stream-event").decode()
        if line.strip():
            out.append(json.loads(line))
    return out


def read_snapshot(home: Path, snapshot: str, sealer: Sealer | None) -> bytes:
    """The JPEG bytes of an event's snapshot (``snapshot``: relative to the data directory)."""
    path = home / snapshot
    data = path.read_bytes()
    if path.name.endswith(SEALED_SUFFIX):
        if sealer is None:
            raise InvalidParameterError(f"{snapshot}: a sealed snapshot needs the encryption key")
        data = sealer.open(data, snapshot_aad(path.name))
    return data
