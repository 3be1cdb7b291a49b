"""Where a stream processor's events and searched frames go besides its in-process
subscribers, each as its settings ask: a webhook (POSTs, the oldest dropped when the receiver
lags), a Kinesis data stream (a record of each frame whose faces were searched,
:mod:`facesearch.media.kinesis`), a JSONL file, and a JPEG snapshot of each matched face under
``snapshot_dir``. With encryption at rest on (``sealer``) snapshots are sealed (``.jpg.fse``)
and JSONL lines are ``FSE1:`` + base64 of the sealed JSON (:mod:`facesearch.media.events`).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image as PILImage

from facesearch.errors import InvalidParameterError
from facesearch.media.events import SEALED_SUFFIX, seal_line, snapshot_aad
from facesearch.media.kinesis import KinesisOutput, KinesisWriter, SearchedFrame
from facesearch.media.stream.model import StreamSettings
from facesearch.media.webhook import OPEN, EgressPolicy, WebhookSender
from facesearch.storage.crypto import Sealer
from facesearch.types import RGBImage


class Outputs:
    """The outputs of processor ``name``: :meth:`open` them at each start, :meth:`close` them
    at each stop. A write that fails is told to ``on_error`` (the processor goes on)."""

    def __init__(self, name: str, settings: StreamSettings, *, on_error: Callable[[str], None],
                 egress: EgressPolicy = OPEN, sealer: Sealer | None = None,
                 kinesis: KinesisOutput | None = None, snapshot_dir: Path | None = None,
                 snapshot_root: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.settings = settings
        self.on_error = on_error
        self.egress = egress
        self.sealer = sealer
        self.kinesis = kinesis
        """Where records go when the settings name a Kinesis data stream."""
        self.snapshot_dir = snapshot_dir
        self.snapshot_root = snapshot_root
        """Snapshot paths in events are relative to it (absolute without it)."""
        self.clock = clock
        self.webhook: WebhookSender | None = None
        self.kinesis_writer: KinesisWriter | None = None
        self._jsonl: TextIO | None = None

    def open(self) -> None:
        """Start the webhook and Kinesis senders and open the JSONL file (appending);
        :class:`InvalidParameterError` when the settings name a Kinesis data stream and no
        Kinesis endpoint is configured."""
        s = self.settings
        if s.kinesis_data_stream_arn is not None and self.kinesis is None:
            raise InvalidParameterError("this server has no Kinesis endpoint configured "
                                        "(FACESEARCH_API_KINESIS_ENDPOINT_URL)")
        if s.webhook_url is not None:
            self.webhook = WebhookSender(s.webhook_url, name=f"stream-{self.name}-webhook",
                                         egress=self.egress)
        if s.kinesis_data_stream_arn is not None and self.kinesis is not None:
            self.kinesis_writer = self.kinesis.writer(s.kinesis_data_stream_arn,
                                                      name=f"stream-{self.name}-kinesis")
        if s.jsonl_path is not None:
            s.jsonl_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(s.jsonl_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._jsonl = open(fd, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        """Send what the webhook and Kinesis queues hold, and close the JSONL file."""
        if self.webhook is not None:
            self.webhook.shutdown()
        if self.kinesis_writer is not None:
            self.kinesis_writer.shutdown()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def event(self, doc: dict[str, object]) -> None:
        """An event (its JSON document) to the JSONL file and the webhook."""
        if self._jsonl is not None:
            try:
                self._jsonl.write(seal_line(json.dumps(doc, ensure_ascii=False), self.sealer)
                                  + "\n")
                self._jsonl.flush()
            except OSError as exc:
                self.on_error(f"cannot write {self.settings.jsonl_path}: {exc.strerror or exc}")
        if self.webhook is not None:
            self.webhook.submit(doc)

    def frame(self, frame: SearchedFrame) -> None:
        """A frame whose faces were searched, to the Kinesis data stream (if any)."""
        if self.kinesis_writer is not None and self.kinesis is not None:
            self.kinesis_writer.submit(self.kinesis.record(frame), partition_key=self.name)

    @property
    def wants_frames(self) -> bool:
        """Whether :meth:`frame` writes anywhere."""
        return self.kinesis_writer is not None and self.kinesis is not None

    def snapshot(self, event_id: str, face_id: str, pixels: RGBImage,
                 box: np.ndarray) -> str | None:
        """Save the crop as ``<day>/<event id>_<matched face id>.jpg`` (the face id lets an
        erasure of that face find and delete it: :func:`facesearch.storage.snapshots.remove_snapshots`);
        its path, or None when there is no snapshot folder, the box is empty or the write
        failed."""
        if self.snapshot_dir is None:
            return None
        h, w = pixels.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        mx, my = 0.3 * (x2 - x1), 0.3 * (y2 - y1)
        l, t = max(0, int(x1 - mx)), max(0, int(y1 - my))
        r, b = min(w, int(x2 + mx)), min(h, int(y2 + my))
        if r <= l or b <= t:
            return None
        day = time.strftime("%Y%m%d", time.gmtime(self.clock()))
        name = f"{event_id}_{face_id}.jpg" + (SEALED_SUFFIX if self.sealer else "")
        path = self.snapshot_dir / day / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            buf = io.BytesIO()
            PILImage.fromarray(np.ascontiguousarray(pixels[t:b, l:r])).save(buf, "JPEG",
                                                                              quality=90)
            data = buf.getvalue()
            if self.sealer is not None:
                data = self.sealer.seal(data, snapshot_aad(name))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            self.on_error(f"cannot write snapshot {path}: {exc.strerror or exc}")
            return None
        root = self.snapshot_root
        return str(path.relative_to(root)) if root is not None else str(path)
