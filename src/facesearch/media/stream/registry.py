"""Stream processors as a service: their definitions (rows of the service's database), the
ones running in this process, their feeds, live views and snapshots.

Rekognition's CreateStreamProcessor / Start / Stop / List / Describe / Delete. A processor
searches on behalf of the caller that created it (a
:class:`~facesearch.services.search.Delegation`: the search gate refuses it once that caller's
key may no longer act); a revocation in this process stops that key's processors and ends the
feeds it opened at once. A case-bound key sees only the processors of its case. Inputs are
allow-listed (:mod:`facesearch.media.inputs`); local V4L2 devices only where
``allow_devices``; a camera is the operator's own choice, so its host is not held to the
egress policy and it may be a device or a file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from facesearch.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    DelegationEndedError,
    FaceSearchError,
    InvalidParameterError,
    NotFoundError,
    StreamProcessorNotFoundError,
)
from facesearch.governance.keys import AccessKeys
from facesearch.media.cameras import Cameras
from facesearch.media.events import EventHub, Subscription, read_snapshot
from facesearch.media.inputs import classify_input
from facesearch.media.kinesis import KinesisOutput
from facesearch.media.stream.model import (
    LiveView,
    ProcessorInfo,
    ProcessorStatus,
    StreamMetrics,
    StreamSettings,
    validate_processor_name,
)
from facesearch.media.stream.processor import StreamProcessor
from facesearch.media.webhook import OPEN, EgressPolicy, validate_url
from facesearch.services.collection import FaceCollections
from facesearch.services.search import Delegation, SearchGate
from facesearch.storage.crypto import Sealer
from facesearch.storage.schema import processors_t, tags_t
from facesearch.storage.store import Store
from facesearch.types import Caller

log = logging.getLogger(__name__)


class StreamProcessors:
    """Stream processor definitions (in the service's database) and the ones running here."""

    def __init__(self, home: Path, store: Store, collections: FaceCollections,
                 search: SearchGate, *, clock: Callable[[], float] = time.time,
                 keys: AccessKeys | None = None, egress: EgressPolicy = OPEN,
                 sealer: Sealer | None = None, cameras: Cameras | None = None,
                 kinesis: KinesisOutput | None = None, allow_devices: bool = False) -> None:
        self.home = home
        self.store = store
        self.cameras = cameras
        """The operator's cameras, which processors may name instead of an input URL."""
        self.kinesis = kinesis
        """Where processors that name a Kinesis data stream write (None: such processors
        are refused)."""
        self.collections = collections
        self.search = search
        self.sealer = sealer
        self.clock = clock
        self.keys = keys
        self.egress = egress
        self.allow_devices = allow_devices
        """Whether local V4L2 devices may be inputs (cameras the operator named always may)."""
        self._live: dict[str, StreamProcessor] = {}
        self._hubs: dict[str, EventHub] = {}
        self._lock = threading.RLock()
        self._closed = False
        if keys is not None:
            keys.revoke_hooks.append(self.key_revoked)

    def _reader_problem(self, actor: str) -> str | None:
        """Why the access key ``actor`` may no longer read a feed (None: it may)."""
        return None if self.keys is None else self.keys.problem(actor)

    def key_revoked(self, key_id: str) -> None:
        """Stop, at once, the processors ``key_id`` created (STOPPED, with the reason, not
        resumed on restart) and end the feeds it opened."""
        reason = f"stopped: the access key {key_id} was revoked"
        with self.store.transaction() as conn:
            names = [r[0] for r in conn.execute(select(processors_t.c.name)
                                                .where(processors_t.c.caller_actor == key_id))]
            conn.execute(update(processors_t).where(processors_t.c.caller_actor == key_id)
                         .values(desired_running=0, updated_at=self.clock()))
        for name in names:
            with self._lock:
                proc = self._live.pop(name, None)
            if proc is not None:
                proc.halt(reason)
            else:
                self._on_status(name, ProcessorStatus.STOPPED, reason)
        with self._lock:
            hubs = list(self._hubs.values())
        for hub in hubs:
            hub.end_for(key_id, f"the access key {key_id} was revoked")

    def _row(self, name: str, caller: Caller | None = None) -> object:
        """The processor's row; one of another case is "not found" to a case-bound caller."""
        case = None if self.keys is None else self.keys.case_of(caller)
        with self.store.transaction() as conn:
            r = conn.execute(select(processors_t).where(processors_t.c.name == name)).first()
        if r is None or (case is not None and r.caller_case != case):
            raise StreamProcessorNotFoundError(f"stream processor {name!r} does not exist")
        return r

    def _info(self, r: object) -> ProcessorInfo:
        g = r._mapping  # type: ignore[attr-defined]
        live = self._live.get(g["name"])
        return ProcessorInfo(g["name"], StreamSettings.model_validate_json(g["settings"]),
                             ProcessorStatus(g["status"]), g["status_message"], g["created_at"],
                             g["updated_at"], live.metrics() if live is not None else None)

    def _resolve(self, settings: StreamSettings) -> tuple[StreamSettings, bool]:
        """The settings a processor runs with (a camera's URL and input format filled in),
        and whether its input is the operator's (a camera: any host, devices allowed)."""
        if settings.camera is None:
            return settings, False
        if self.cameras is None:
            raise InvalidParameterError("this service has no cameras configured")
        cam = self.cameras.get(settings.camera)
        return settings.model_copy(update={
            "input_url": cam.url, "input_format": settings.input_format or cam.input_format}), True

    def _check(self, settings: StreamSettings, caller: Caller) -> tuple[StreamSettings, bool]:
        """Refuse settings that may not run (input, outputs, the creator's key, the search's
        admission); the settings to run with and whether the input is a camera."""
        run, camera = self._resolve(settings)
        assert run.input_url is not None
        _, fmt, is_file = classify_input(run.input_url, run.input_format,
                                         allow_devices=camera or self.allow_devices)
        if not camera and not is_file and fmt != "v4l2":
            self.egress.check_url(run.input_url, "stream input")
        if settings.webhook_url is not None:
            validate_url(settings.webhook_url, self.egress)
        if settings.kinesis_data_stream_arn is not None:
            if self.kinesis is None:
                raise InvalidParameterError("this server has no Kinesis endpoint configured "
                                            "(FACESEARCH_API_KINESIS_ENDPOINT_URL)")
            self.kinesis.check(settings.kinesis_data_stream_arn)
        try:
            self.search.admit(settings.collection, operation="search.stream",
                              threshold=settings.threshold, max_results=settings.max_results,
                              rate_limit=False, delegation=Delegation(caller))
        except DelegationEndedError as exc:
            raise AccessDeniedError(f"the processor cannot run: {exc.message}") from None
        return run, camera

    def foreground(self, settings: StreamSettings, *, caller: Caller | None = None,
                   name: str = "cli") -> StreamProcessor:
        """A processor for this process to run in the foreground (``facesearch stream run``):
        its search is admitted as a stored processor's is (refusals audited), but it is not
        stored nor resumed, and, being the operator's own command, its input and webhook are
        not held to the egress policy. :meth:`StreamProcessor.start` it and
        :meth:`StreamProcessor.shutdown` it."""
        validate_processor_name(name)
        c = caller or Caller.local()
        run, _ = self._resolve(settings)
        self.search.admit(settings.collection, operation="search.stream", caller=c,
                          threshold=settings.threshold, max_results=settings.max_results,
                          rate_limit=False)
        return StreamProcessor(name, run, self.collections.pipeline, self.search,
                               delegation=Delegation(c),
                               snapshot_dir=self.home / "snapshots" / name,
                               snapshot_root=self.home, clock=self.clock, sealer=self.sealer,
                               kinesis=self.kinesis)

    def create(self, name: str, settings: StreamSettings, *,
               caller: Caller | None = None) -> ProcessorInfo:
        """Define a processor (STOPPED until started)."""
        validate_processor_name(name)
        c = caller or Caller.local()
        self._check(settings, c)
        now = self.clock()
        with self._lock, self.store.transaction() as conn:
            if conn.execute(select(processors_t.c.id)
                            .where(processors_t.c.name == name)).first() is not None:
                raise AlreadyExistsError(f"stream processor {name!r} already exists")
            conn.execute(insert(processors_t).values(
                name=name, settings=settings.model_dump_json(),
                status=ProcessorStatus.STOPPED.value, desired_running=0, caller_actor=c.actor,
                caller_role=c.role, caller_purpose=c.purpose, caller_case=c.case_ref,
                caller_client=c.client, created_at=now, updated_at=now))
        return self.describe(name)

    def describe(self, name: str, *, caller: Caller | None = None) -> ProcessorInfo:
        return self._info(self._row(name, caller))

    def metrics(self, name: str, *, caller: Caller | None = None) -> StreamMetrics | None:
        self._row(name, caller)
        live = self._live.get(name)
        return live.metrics() if live is not None else None

    def hub(self, name: str) -> EventHub:
        with self._lock:
            return self._hubs.setdefault(name, EventHub(self._reader_problem))

    def subscribe(self, name: str, *, max_queue: int = 256,
                  loop: asyncio.AbstractEventLoop | None = None,
                  caller: Caller | None = None) -> Subscription:
        """A feed of the processor's events (kept across stops and starts; close it when
        done). Pass the running ``loop`` to read it with ``await sub.aget()``. A ``caller``'s
        feed ends when its key is revoked or expires; a case-bound key may subscribe only to
        its case's processors. Subscribing is audited."""
        self._row(name, caller)
        sub = self.hub(name).subscribe(max_queue, loop, caller.actor if caller else None)
        self.search.trail.note("stream.subscribe", caller, details={"processor": name})
        return sub

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called (live feeds end)."""
        return self._closed

    def watch(self, name: str, *, caller: Caller | None = None) -> None:
        """Let ``caller`` watch the processor's live view (a case-bound key: its case's
        processors only); audited once per viewing (``stream.live``)."""
        self._row(name, caller)
        self.search.trail.note("stream.live", caller, details={"processor": name})

    def live_view(self, name: str) -> LiveView | None:
        """The processor's newest processed frame (None while it does not run here or has
        processed none); StreamProcessorNotFoundError once it is deleted."""
        with self._lock:
            live = self._live.get(name)
        if live is None:
            self._row(name)
            return None
        return live.live_view() if live.running else None

    def snapshot(self, name: str, event_id: str, *, caller: Caller | None = None) -> bytes:
        """The JPEG snapshot of one of the processor's events (audited,
        ``stream.snapshot.read``); NotFoundError when it has none or it was erased."""
        try:
            event_id = str(uuid.UUID(event_id))
        except ValueError:
            raise InvalidParameterError(f"invalid event id {event_id!r}") from None
        self._row(name, caller)
        root = (self.home / "snapshots").resolve()
        folder = (root / name).resolve()
        found = sorted(folder.glob(f"*/{event_id}_*.jpg*")) if folder.is_relative_to(root) \
            and folder != root else []
        if not found:
            raise NotFoundError(f"event {event_id} of stream processor {name!r} has no snapshot "
                                "(snapshots off, or erased with the face it matched)")
        data = read_snapshot(self.home, str(found[0].relative_to(self.home.resolve())),
                             self.sealer)
        self.search.trail.note("stream.snapshot.read", caller,
                               details={"processor": name, "event_id": event_id})
        return data

    def _on_status(self, name: str, status: ProcessorStatus, message: str | None) -> None:
        with self.store.transaction() as conn:
            conn.execute(update(processors_t).where(processors_t.c.name == name).values(
                status=status.value, status_message=message, updated_at=self.clock()))

    def start(self, name: str, *, caller: Caller | None = None) -> ProcessorInfo:
        """Start a processor in this process (ConflictError if it already runs)."""
        r = self._row(name, caller)
        g = r._mapping  # type: ignore[attr-defined]
        settings = StreamSettings.model_validate_json(g["settings"])
        caller = Caller(actor=g["caller_actor"], role=g["caller_role"],
                        purpose=g["caller_purpose"], case_ref=g["caller_case"],
                        client=g["caller_client"])
        # Checked before taking the lock: it may ask the network (DNS, the Kinesis endpoint).
        run, camera = self._check(settings, caller)
        with self._lock:
            if self._closed:
                raise ConflictError("the stream service is shut down")
            live = self._live.get(name)
            if live is not None and live.running:
                raise ConflictError(f"stream processor {name!r} is already running")
            if live is not None:
                live.shutdown()
            # A camera is the operator's: its own host is not held to the egress policy, but
            # where it redirects, what its playlist names and the webhook are.
            proc = StreamProcessor(name, run, self.collections.pipeline, self.search,
                                   delegation=Delegation(caller),
                                   hub=self.hub(name), snapshot_dir=self.home / "snapshots" / name,
                                   snapshot_root=self.home, on_status=self._on_status,
                                   clock=self.clock,
                                   on_delegation_ended=self._not_resumed(name),
                                   egress=(self.egress.admitting(run.input_url or "") if camera
                                           else self.egress), sealer=self.sealer,
                                   allow_devices=camera or self.allow_devices,
                                   kinesis=self.kinesis)
            with self.store.transaction() as conn:
                conn.execute(update(processors_t).where(processors_t.c.name == name)
                             .values(desired_running=1, updated_at=self.clock()))
            self._live[name] = proc
            proc.start()
        return self.describe(name)

    def _not_resumed(self, name: str) -> Callable[[], None]:
        """When the gate refuses a processor's delegation (its creator's key may no longer
        act): it is no longer running here nor resumed on restart."""
        def ended() -> None:
            with self._lock:
                self._live.pop(name, None)
            with self.store.transaction() as conn:
                conn.execute(update(processors_t).where(processors_t.c.name == name)
                             .values(desired_running=0, updated_at=self.clock()))
        return ended

    def stop(self, name: str, *, caller: Caller | None = None) -> ProcessorInfo:
        """Stop a processor (a no-op when it is not running)."""
        self._row(name, caller)
        with self._lock:
            proc = self._live.pop(name, None)
            with self.store.transaction() as conn:
                conn.execute(update(processors_t).where(processors_t.c.name == name)
                             .values(desired_running=0, updated_at=self.clock()))
        if proc is not None:
            proc.shutdown()
        else:
            self._on_status(name, ProcessorStatus.STOPPED, None)
        return self.describe(name)

    def delete(self, name: str, *, caller: Caller | None = None) -> None:
        """Stop and delete a processor; its subscribers' feeds end."""
        self._row(name, caller)
        with self._lock:
            proc = self._live.pop(name, None)
        if proc is not None:
            proc.shutdown()
        with self._lock:
            with self.store.transaction() as conn:
                conn.execute(delete(processors_t).where(processors_t.c.name == name))
                conn.execute(delete(tags_t).where(tags_t.c.kind == "streamprocessor",
                                                  tags_t.c.name == name))
            hub = self._hubs.pop(name, None)
        if hub is not None:
            hub.close()

    def resume(self) -> list[str]:
        """Start the processors that were running when the service last stopped."""
        with self.store.transaction() as conn:
            names = [r[0] for r in conn.execute(select(processors_t.c.name)
                                                .where(processors_t.c.desired_running == 1))]
        started = []
        for name in names:
            try:
                self.start(name)
                started.append(name)
            except FaceSearchError as exc:
                self._on_status(name, ProcessorStatus.FAILED, exc.message)
                log.error("stream processor %s could not be resumed: %s", name, exc.message)
        return started

    def shutdown(self) -> None:
        """Stop every processor running here (they start again with :meth:`resume`)."""
        with self._lock:
            self._closed = True
            procs, self._live = list(self._live.values()), {}
            hubs, self._hubs = list(self._hubs.values()), {}
        for p in procs:
            p.shutdown()
        for h in hubs:
            h.close()

    # Last in the class: below it, ``list`` in annotations would mean this method.
    def list_processors(self, *, caller: Caller | None = None) -> list[ProcessorInfo]:
        """Processors in name order (a case-bound ``caller``: its case's only)."""
        q = select(processors_t).order_by(processors_t.c.name)
        case = None if self.keys is None else self.keys.case_of(caller)
        if case is not None:
            q = q.where(processors_t.c.caller_case == case)
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
        return [self._info(r) for r in rows]
