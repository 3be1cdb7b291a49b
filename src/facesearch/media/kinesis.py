"""Stream processors' records to Amazon Kinesis Data Streams (or a compatible endpoint), for
Rekognition clients that name ``Output.KinesisDataStream`` (the camera watchlist pattern:
CreateStreamProcessor, then a consumer reading the data stream).

A processor with a ``kinesis_data_stream_arn`` writes one record per frame whose faces it
searched (:class:`SearchedFrame`), in the record format the operator's server gives
(:class:`KinesisOutput`; the HTTP API gives Rekognition Video's,
:func:`facesearch.shapes.rekognition.rekognition_stream_record`). A :class:`KinesisWriter` sends
them with ``PutRecord`` from its own thread through a bounded queue (the oldest record is dropped
when the endpoint cannot keep up), so a slow or dead endpoint never stalls the processor;
``delivered``, ``failed`` and ``dropped`` count what happened.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facesearch.errors import InvalidParameterError
from facesearch.media.aws import AwsEndpoint

if TYPE_CHECKING:
    from facesearch.services.search import Match
    from facesearch.types import FaceView

log = logging.getLogger(__name__)

DATA_STREAM_ARN = re.compile(
    r"^arn:[a-z\d-]+:kinesis:[a-z\d-]+:\d{12}:stream/([a-zA-Z0-9_.\-]{1,128})$")
"""A Kinesis Data Streams ARN (``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``)."""
MAX_QUEUE = 1000
"""Records waiting to be sent per processor; beyond that the oldest is dropped."""
WRITE_FAILED = "the record could not be written to Kinesis (see the server log)"
"""The one failure reason a client sees, whatever went wrong."""


def stream_name(arn: str) -> str:
    """The stream name of a Kinesis Data Streams ARN, or :class:`InvalidParameterError`."""
    m = DATA_STREAM_ARN.match(arn)
    if m is None:
        raise InvalidParameterError(f"invalid Kinesis data stream ARN {arn!r}: expected "
                                    "arn:aws:kinesis:REGION:ACCOUNT:stream/NAME")
    return m.group(1)


@dataclass(frozen=True)
class SearchedFrame:
    """A frame whose faces a stream processor searched: what its record says.

    ``faces`` are the searched faces (frame pixels), ``matches[i]`` the candidates of
    ``faces[i]`` at or above the threshold, best first (empty: no candidate). ``session``
    counts the processor's connections to its input (1, 2, ... after reconnections) and
    ``offset_s`` is the frame's time from the first frame of that connection; ``captured_at``
    is when the frame was decoded (Unix time, s).
    """

    processor: str
    input_arn: str | None
    status: str
    session: int
    offset_s: float
    captured_at: float
    width: int
    height: int
    faces: list[FaceView]
    matches: list[list[Match]]


RecordFormat = Callable[[SearchedFrame], Mapping[str, Any]]
"""A frame's record (JSON-serialisable)."""


class KinesisWriter:
    """Writes records to one data stream from a worker thread (see the module docstring)."""

    def __init__(self, client: Any, arn: str, *, name: str = "kinesis",
                 max_queue: int = MAX_QUEUE) -> None:
        self.arn = arn
        self.stream = stream_name(arn)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._client = client
        self._queue: collections.deque[tuple[bytes, str]] = collections.deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, record: Mapping[str, Any], partition_key: str) -> None:
        """Queue a record (never blocks)."""
        data = json.dumps(record, ensure_ascii=False).encode()
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append((data, partition_key))
            self._cond.notify()

    def _run(self) -> None:
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )

        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                data, key = self._queue.popleft()
            try:
                self._client.put_record(StreamName=self.stream, Data=data, PartitionKey=key)
                self.delivered += 1
            except (ClientError, BotoCoreError) as exc:
                self.failed += 1
                self.last_error = WRITE_FAILED
                log.warning("Kinesis record to %s failed: %s", self.arn, exc)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop after the queued records are sent (or ``timeout_s`` passed)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout_s)


class KinesisOutput:
    """One Kinesis Data Streams endpoint and the record format written to it."""

    def __init__(self, endpoint: AwsEndpoint, record: RecordFormat) -> None:
        self.endpoint = endpoint
        self.record = record
        self._client: Any = endpoint.client("kinesis")

    def check(self, arn: str) -> None:
        """Refuse (:class:`InvalidParameterError`) an ARN that is malformed or names a stream
        the endpoint does not have (or cannot be asked about)."""
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )

        name = stream_name(arn)
        try:
            self._client.describe_stream_summary(StreamName=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise InvalidParameterError(f"Kinesis data stream {arn!r} cannot be used "
                                        f"({code})") from None
        except BotoCoreError as exc:
            log.warning("Kinesis endpoint %s: %s", self.endpoint.url, exc)
            raise InvalidParameterError(f"Kinesis data stream {arn!r} cannot be used (the "
                                        "endpoint did not answer)") from None

    def writer(self, arn: str, *, name: str) -> KinesisWriter:
        """A writer of records to ``arn`` (shut it down when done)."""
        return KinesisWriter(self._client, arn, name=name)

    def shutdown(self) -> None:
        self._client.close()
