"""A stream processor's capture thread: open its input (PyAV / FFmpeg, through
:func:`facesearch.media.inputs.open_input`), decode every frame and put the newest one in a
one-frame slot; a frame replaced before it was processed is counted as dropped, so the
processor never falls behind the camera. When the input fails or ends it reconnects with
exponential backoff (``reconnect_initial_s`` doubling up to ``reconnect_max_s``). Every
decoded frame goes through the shot detector (:mod:`facesearch.video.shots`), so a cut is seen
even between two frames that processing dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from facesearch.errors import InvalidVideoError
from facesearch.media.inputs import INPUT_REFUSED, classify_input, open_input, redact_credentials
from facesearch.media.stream.model import StreamSettings
from facesearch.media.webhook import EgressPolicy, EgressRefusedError
from facesearch.video.shots import ShotDetector

log = logging.getLogger(__name__)


class Rate:
    """Events per second over the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            n = len(self._times)
        span = min(self.window_s, now - self._start)
        return n / span if span > 0 else 0.0


def percentile(values: deque[float], q: float) -> float | None:
    snapshot = list(values)  # one C-level copy: safe while another thread appends
    return round(float(np.percentile(snapshot, q)), 1) if snapshot else None


class _NoVideo(Exception):
    """The input opened but carries no video stream."""


@dataclass(frozen=True, eq=False)
class Captured:
    frame: av.VideoFrame
    timestamp_ms: int
    mono: float
    wall: float
    session: int
    shot: int = 0
    """Cuts before this frame since the input (re)opened."""


class LatestFrame:
    """One-frame handoff: the newest frame wins; replaced frames are counted as dropped."""

    def __init__(self) -> None:
        self._item: Captured | None = None
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Captured) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout_s: float) -> Captured | None:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item


class CaptureEvents(Protocol):
    """What the capture thread tells its processor."""

    def error(self, message: str) -> None:
        """A failure it retries (recorded as the processor's last error)."""

    def fail(self, message: str) -> None:
        """A failure retrying cannot fix (the processor stops, FAILED)."""

    def ended(self, reason: str) -> None:
        """The input ended for good (a file not looped): the processor stops."""


class Capture:
    """The capture side of processor ``name``: reads ``settings.input_url`` (checked again
    against ``egress`` at each connection; ``allow_devices``: whether a V4L2 device may be
    it) until ``stop`` is set, telling ``events`` what went wrong. Counters: ``connected``,
    ``reconnects``, ``frames_in``, ``rate_in``; ``slot`` holds the newest frame."""

    def __init__(self, name: str, settings: StreamSettings, *, egress: EgressPolicy,
                 stop: threading.Event, events: CaptureEvents,
                 clock: Callable[[], float] = time.time, allow_devices: bool = True) -> None:
        assert settings.input_url is not None
        self.name = name
        self.settings = settings
        self.egress = egress
        self._stop = stop
        self.events = events
        self.clock = clock
        self.target, self.format, self.is_file = classify_input(
            settings.input_url, settings.input_format, allow_devices=allow_devices)
        self.slot = LatestFrame()
        self.connected = False
        self.reconnects = 0
        self.frames_in = 0
        self.rate_in = Rate()

    def _open(self) -> av.container.InputContainer:
        s = self.settings
        options: dict[str, str] = {}
        if self.target.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = s.rtsp_transport
        if not self.is_file and self.format != "v4l2":
            self.egress.check_url(self.target, "stream input")  # again: DNS may have changed
        return open_input(self.target, self.format, options=options,
                          timeout=(s.open_timeout_s, s.read_timeout_s), egress=self.egress)

    def run(self) -> None:
        """The capture thread (see the class docstring); returns when stopped."""
        s = self.settings
        attempt = 0
        session = 0
        while not self._stop.is_set():
            session += 1
            reason = "the stream ended"
            got = False
            container = None
            try:
                container = self._open()
                if not container.streams.video:
                    raise _NoVideo("the input has no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb = float(stream.time_base) if stream.time_base is not None else 0.0
                rate = float(stream.average_rate or stream.guessed_rate or 25)
                first_pts: int | None = None
                start = time.monotonic()
                shots = ShotDetector(rate)
                for i, frame in enumerate(container.decode(stream)):
                    if self._stop.is_set():
                        break
                    shots.feed(frame)
                    if frame.pts is not None and tb:
                        first_pts = frame.pts if first_pts is None else first_pts
                        ts_ms = round((frame.pts - first_pts) * tb * 1000)
                    else:
                        ts_ms = round(i * 1000 / rate)
                    if self.is_file and s.realtime:
                        due = start + ts_ms / 1000.0 - time.monotonic()
                        if due > 0 and self._stop.wait(due):
                            break
                    now = time.monotonic()
                    if not got:
                        got, attempt = True, 0
                        self.connected = True
                    self.frames_in += 1
                    self.rate_in.tick(now)
                    self.slot.put(Captured(frame, max(ts_ms, 0), now, self.clock(), session,
                                           shots.shot))
                else:
                    if self.is_file and s.loop and got:
                        continue
            except (EgressRefusedError, InvalidVideoError) as exc:
                self.events.fail(exc.message)  # a refused input: retrying cannot change that
                break
            except (av.FFmpegError, OSError, _NoVideo) as exc:
                reason = redact_credentials(
                    f"{type(exc).__name__}: {str(exc).strip() or 'input error'}")
            finally:
                self.connected = False
                if container is not None:
                    container.close()
            if self._stop.is_set():
                break
            if self.is_file and not s.loop and got:
                self.events.ended("the file ended")
                self._stop.set()
                break
            self.events.error(INPUT_REFUSED)  # the same text whatever failed: no port scanning
            log.warning("stream processor %s: %s; reconnecting", self.name, reason)
            delay = min(s.reconnect_max_s, s.reconnect_initial_s * 2 ** attempt)
            attempt += 1
            self.reconnects += 1
            if self._stop.wait(delay):
                break
