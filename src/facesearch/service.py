"""The service: one object that owns a data directory and every service on it.

``FaceSearch.open()`` is the composition root used by the library, the CLI and the HTTP API;
they all call the same service objects. Everything it starts stops with :meth:`shutdown`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from facesearch.config import Settings
from facesearch.errors import DatabaseError, FaceSearchError
from facesearch.governance.audit.chain import AuditKeyError
from facesearch.governance.audit.event import AuditEvent
from facesearch.governance.audit.log import AuditLog
from facesearch.governance.calibration import Calibration
from facesearch.governance.erasure import Erasure
from facesearch.governance.keys import AccessKeys, load_master_key
from facesearch.governance.policy import SearchLimiter, Spike
from facesearch.governance.review import Reviews
from facesearch.governance.tags import ResourceKind, Tags
from facesearch.governance.trail import AuditTrail
from facesearch.media.aws import endpoint_of
from facesearch.media.cameras import Cameras
from facesearch.services.collection import FaceCollections
from facesearch.services.models import Models
from facesearch.services.search import SearchGate
from facesearch.services.users import UserDirectory
from facesearch.storage.crypto import sealer_of
from facesearch.storage.database import url_of
from facesearch.storage.store import Store
from facesearch.storage.vectors import vector_backend
from facesearch.types import Caller
from facesearch.vision.pipeline import Pipeline

if TYPE_CHECKING:
    from facesearch.media.jobs import VideoJobs
    from facesearch.media.kinesis import KinesisOutput
    from facesearch.media.sns import SnsPublisher
    from facesearch.media.stream.registry import StreamProcessors
    from facesearch.media.webhook import EgressPolicy
    from facesearch.services.cluster import RayCluster

Clock = Callable[[], float]

log = logging.getLogger("facesearch")
setup_log = logging.getLogger("facesearch.setup")
"""Warnings about how secrets are kept (the server logs them; one-shot CLI commands don't)."""


class FaceSearch:
    """Collections, users, audit, keys, cameras, tags, video and streams on one data
    directory, their databases in it (SQLite) or on a PostgreSQL server that several nodes
    share (``FACESEARCH_DATABASE_URL``, ``FACESEARCH_AUDIT_DATABASE_URL``).

    Opening sets the process umask to 077 and makes the directory's existing files 0600 and
    folders 0700; it brings both databases to the current schema (migrations); it refuses an
    audit signing key or witness inside the directory, and a law-enforcement deployment
    without a configured signing key (:class:`AuditKeyError`), and a shared database without
    the secrets every node must share (:class:`DatabaseError`); it appends audit events a
    crash left in the outbox.
    """

    def __init__(self, settings: Settings, *, pipeline: Pipeline | None = None,
                 clock: Clock = time.time, serving: bool = False) -> None:
        """``pipeline``: the face pipeline to use (default: the settings', loaded on first
        use). ``serving``: this process serves the HTTP API, whose settings
        (``settings.api``) then apply to the services: server paths only under its video
        roots, local cameras only where allowed, SNS and Kinesis outputs where configured
        (elsewhere, as in the CLI, server paths and cameras are the operator's own)."""
        self.settings = settings
        self.serving = serving
        self.home: Path = settings.home
        os.umask(0o077)  # everything written from now on: files 0600, folders 0700
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        restrict_permissions(self.home)
        sealer = sealer_of(settings)
        self.sealer = sealer
        """Seals vectors, index files, stream snapshots and events at rest (None: off)."""
        _check_shared(settings)
        self.store = Store(settings.metadata_target(), sealer)
        try:
            signing_key, witness = self._audit_paths()
        except AuditKeyError:
            self.store.close()
            raise
        try:
            self.audit = AuditLog(settings.audit_target(), signing_key, clock=clock,
                                  witness=witness)
        except FaceSearchError:
            self.store.close()
            raise
        self.models = Models(settings, pipeline=pipeline)
        """The face pipeline, model version and calibrations every service uses."""
        self._clock = clock
        self._video: VideoJobs | None = None
        self._cluster: RayCluster | None = None
        self._streams: StreamProcessors | None = None
        self._sns: SnsPublisher | None = None
        self._kinesis: KinesisOutput | None = None
        limiter = SearchLimiter(per_minute=settings.searches_per_minute,
                                on_spike=self._volume_spike)
        try:
            self.indexes = vector_backend(settings, self.home, self.store, sealer)
        except FaceSearchError:
            self.store.close()
            self.audit.shutdown()
            raise
        if sealer is not None and settings.vector_backend != "faiss":
            setup_log.warning("encryption at rest seals the database's vectors, but those in "
                              "%s are as safe as its storage: encrypt its volumes or bucket",
                              settings.vector_backend)
        self.trail = AuditTrail(self.audit, self.store, self.models.loaded_version)
        self.collections = FaceCollections(
            self.store, self.indexes, self.trail, self.models, clock=clock,
            limits=settings.limits,
            law_enforcement_allowed=settings.audit_signing_key is not None)
        master = settings.keys_master_key
        master_file = settings.keys_master_key_file
        if master is None and (master_file is None or _inside(master_file, self.home)):
            setup_log.warning("the access-key master key is kept in the data directory: a copy "
                              "of the directory yields every key secret; set "
                              "FACESEARCH_KEYS_MASTER_KEY_FILE to a file outside it")
        self.keys = AccessKeys(self.store, lambda: load_master_key(
            self.home, master.get_secret_value() if master else None, master_file),
            clock=clock, audit=self.audit)
        self.search = SearchGate(self.store, self.indexes, self.trail, self.models,
                                 limiter=limiter, limits=settings.limits, keys=self.keys)
        self.users = UserDirectory(self.collections, self.search, self.models)
        self.erasure = Erasure(self.store, self.indexes, self.trail,
                               snapshots=self.home / "snapshots", clock=clock)
        self.reviews = Reviews(self.audit, self.trail)
        self.cameras = Cameras(self.store, self.trail, clock=clock, sealer=sealer)
        """The camera inputs the operator names (``facesearch cameras add``)."""
        self.tags = Tags(self.store, self.trail, self._tag_visible)
        """Tags of collections and stream processors."""
        self.trail.drain()  # audit events a crash left in the outbox

    def _law_enforcement(self) -> bool:
        """Whether this is a law-enforcement deployment (the setting, or any collection
        with the law-enforcement policy)."""
        if self.settings.law_enforcement:
            return True
        with self.store.transaction() as conn:
            return any(c.settings.get("policy", {}).get("law_enforcement")
                       for c in self.store.collections.list_all(conn))

    def _audit_paths(self) -> tuple[Path, Path | None]:
        """The audit signing key and witness file; both must lie outside the data directory.
        Without a configured key a law-enforcement deployment refuses to start; others keep
        the key in the data directory, with a warning."""
        key, witness = self.settings.audit_signing_key, self.settings.audit_witness
        for name, path in (("FACESEARCH_AUDIT_SIGNING_KEY", key),
                           ("FACESEARCH_AUDIT_WITNESS", witness)):
            if path is not None and _inside(path, self.home):
                raise AuditKeyError(f"{name} ({path}) must lie outside the data directory "
                                    f"{self.home}: whoever holds a copy of the directory could "
                                    f"otherwise rewrite the audit trail unnoticed")
            if path is not None and _hard_linked(path):
                raise AuditKeyError(f"{name} ({path}) has more than one name (a hard link): it "
                                    "may also lie in the data directory; keep one copy only")
        if key is not None:
            self._left_behind_key()
        if key is None:
            if self._law_enforcement():
                raise AuditKeyError(
                    "a law-enforcement deployment needs the audit signing key outside the data "
                    "directory: set FACESEARCH_AUDIT_SIGNING_KEY (and FACESEARCH_AUDIT_WITNESS)"
                    " to files on another volume")
            setup_log.warning("the audit signing key is kept in the data directory: whoever copies "
                        "it can rewrite and re-sign the audit trail; set "
                        "FACESEARCH_AUDIT_SIGNING_KEY to a file outside it")
            key = self.home / "keys" / "audit-ed25519.pem"
        if witness is None:
            setup_log.warning("no audit witness file: a cut tail of the audit trail shows only "
                        "against checkpoints kept elsewhere; set FACESEARCH_AUDIT_WITNESS")
        else:
            witness.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return key, witness

    def _left_behind_key(self) -> None:
        """A private key still under ``<home>/keys/`` once the signing key is configured
        outside: a warning, or :class:`AuditKeyError` in a law-enforcement deployment (a
        copy of the directory would still carry a key that signed its checkpoints)."""
        folder = self.home / "keys"
        left = sorted(p.name for p in folder.glob("*.pem")
                      if p.is_file() and b"PRIVATE KEY" in p.read_bytes()[:200]) \
            if folder.is_dir() else []
        if not left:
            return
        message = (f"a private key remains in the data directory ({', '.join(left)} under "
                   f"{folder}) although FACESEARCH_AUDIT_SIGNING_KEY names another: delete it "
                   "(after moving it out, nothing there may sign the audit trail)")
        if self._law_enforcement():
            raise AuditKeyError(message)
        setup_log.warning(message)

    def _volume_spike(self, spike: Spike) -> None:
        """A caller's search volume spiked far above its baseline: log it and audit it."""
        log.warning("search volume spike: %s made %d searches in %.0f s (baseline %.1f)",
                    spike.actor, spike.count, spike.window_seconds, spike.baseline)
        self.audit.append(AuditEvent(
            operation="alert.volume_spike", actor="system:monitor", role="system",
            details={"subject": spike.actor, "count": spike.count,
                     "baseline": round(spike.baseline, 2), "window_s": spike.window_seconds}))

    def _tag_visible(self, kind: ResourceKind, name: str, caller: Caller | None) -> None:
        """The resource exists and ``caller`` may see it (else its not-found error)."""
        if kind is ResourceKind.COLLECTION:
            with self.store.transaction() as conn:
                self.store.collections.get(conn, name)
        else:
            self.streams.describe(name, caller=caller)

    def calibration(self) -> Calibration | None:
        """The shipped calibration of the running model, or None."""
        return self.models.calibration()

    @property
    def pipeline(self) -> Pipeline:
        """The face pipeline (:attr:`models`', loaded on first use)."""
        return self.models.pipeline

    @property
    def video(self) -> VideoJobs:
        """Stored-video face search and detection jobs (made on first use; call
        ``video.start()`` in a long-running server to run jobs a restart interrupted)."""
        if self._video is None:
            from facesearch.media.jobs import VideoJobs
            from facesearch.media.sns import SnsPublisher

            cluster = self.cluster
            api = self.settings.api
            sns = endpoint_of(api.sns) if self.serving else None
            self._sns = None if sns is None else SnsPublisher(sns)
            self._video = VideoJobs(self.home, self.store, self.collections, self.search,
                                    workers=self.settings.video_workers,
                                    max_video_bytes=self.settings.max_video_bytes,
                                    per_key=(self.settings.video_waiting_per_key,
                                             self.settings.video_parked_bytes_per_key),
                                    clock=self._clock, keys=self.keys,
                                    egress=self._egress(), cluster=cluster,
                                    pipeline_spec=cluster.spec(self.settings)
                                    if cluster is not None else None,
                                    sns=self._sns,
                                    path_roots=api.video.roots() if self.serving else None)
        return self._video

    @property
    def cluster(self) -> RayCluster | None:
        """The Ray cluster of ``FACESEARCH_RAY_ADDRESS`` (connected on first use), or None."""
        if self._cluster is None and self.settings.ray_address:
            from facesearch.services.cluster import RayCluster

            self._cluster = RayCluster(self.settings.ray_address, gpus=self.settings.ray_gpus)
        return self._cluster

    @property
    def streams(self) -> StreamProcessors:
        """Live stream processors (made on first use; call ``streams.resume()`` in a
        long-running server to restart the processors that were running)."""
        if self._streams is None:
            from facesearch.media.kinesis import KinesisOutput
            from facesearch.media.stream.registry import StreamProcessors
            from facesearch.shapes.rekognition import rekognition_stream_record

            api = self.settings.api
            kinesis = endpoint_of(api.kinesis) if self.serving else None
            self._kinesis = (None if kinesis is None
                             else KinesisOutput(kinesis, rekognition_stream_record))
            self._streams = StreamProcessors(
                self.home, self.store, self.collections, self.search, clock=self._clock,
                keys=self.keys, egress=self._egress(), sealer=self.sealer,
                cameras=self.cameras, kinesis=self._kinesis,
                allow_devices=api.video.allow_devices if self.serving else True)
        return self._streams

    def _egress(self) -> EgressPolicy:
        """Where webhooks and stream inputs may connect (public addresses, plus
        ``FACESEARCH_EGRESS_ALLOW``)."""
        from facesearch.media.webhook import EgressPolicy

        return EgressPolicy.parse(self.settings.egress_allow)

    @classmethod
    def open(cls, home: Path | str | None = None, **overrides: object) -> FaceSearch:
        """Open (creating if needed) a data directory; settings come from the environment."""
        if home is not None:
            overrides["home"] = Path(home)
        return cls(Settings(**overrides))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        """Stop everything this object started (stream processors, video jobs, and then the
        SNS and Kinesis outputs they wrote to), then close the databases."""
        if self._streams is not None:
            self._streams.shutdown()
        if self._video is not None:
            self._video.shutdown()
        for output in (self._sns, self._kinesis):
            if output is not None:
                output.shutdown()
        self._sns = self._kinesis = None
        if self._cluster is not None:
            self._cluster.shutdown()
        self.indexes.shutdown()
        self.store.close()
        self.audit.shutdown()

    def __enter__(self) -> FaceSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _check_shared(settings: Settings) -> None:
    """A database on a server is shared by every node that names it: the secrets that seal
    and sign what is in it must be the same on each, so they cannot be the ones each data
    directory makes for itself."""
    shared = [name for name, target in (("FACESEARCH_DATABASE_URL", settings.metadata_target()),
                                        ("FACESEARCH_AUDIT_DATABASE_URL",
                                         settings.audit_target()))
              if url_of(target).get_backend_name() != "sqlite"]
    if not shared:
        return
    missing = [name for name, value in (
        ("FACESEARCH_AUDIT_SIGNING_KEY", settings.audit_signing_key),
        ("FACESEARCH_KEYS_MASTER_KEY_FILE (or FACESEARCH_KEYS_MASTER_KEY)",
         settings.keys_master_key or settings.keys_master_key_file)) if value is None]
    if missing:
        raise DatabaseError(f"{' and '.join(shared)} name a shared database: every node must "
                            f"use the same secrets, kept outside its data directory; set "
                            f"{' and '.join(missing)}")


def _inside(path: Path, home: Path) -> bool:
    """Whether ``path`` lies in ``home``: after resolving links, or by device and inode (any
    folder above it is ``home`` itself reached by another path, as a bind mount)."""
    resolved, root = path.resolve(), home.resolve()
    if resolved.is_relative_to(root):
        return True
    try:
        st = root.stat()
    except OSError:
        return False
    for folder in resolved.parents:
        try:
            f = folder.stat()
        except OSError:
            continue
        if (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _hard_linked(path: Path) -> bool:
    """Whether the file ``path`` has more than one name (one may lie anywhere, the data
    directory included: a hard link cannot be told from the original)."""
    try:
        return path.resolve().stat().st_nlink > 1
    except OSError:
        return False


def restrict_permissions(home: Path) -> int:
    """Make the data directory private to its owner: folders 0700, files 0600 (links are
    left alone). Returns how many modes were changed."""
    changed = 0
    for root, dirs, files in os.walk(home):
        for name, want in [(d, 0o700) for d in dirs] + [(f, 0o600) for f in files]:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if not os.path.islink(p) and st.st_mode & 0o777 != want:
                os.chmod(p, want)
                changed += 1
    st = os.stat(home)
    if st.st_mode & 0o777 != 0o700:
        os.chmod(home, 0o700)
        changed += 1
    return changed
