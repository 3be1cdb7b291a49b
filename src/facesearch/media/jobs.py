"""Asynchronous video face search and face detection jobs: the queue and its workers.

Semantics follow Rekognition Video's StartFaceSearch / GetFaceSearch and StartFaceDetection /
GetFaceDetection:

- A job's video is scanned (:func:`facesearch.video.scan.scan_video`: faces detected on the
  sampled frames and followed as persons, here or in a Ray task of
  :mod:`facesearch.services.cluster`). In face search jobs each person is searched with its
  template (one audited 1:N search per batch of persons, through the search gate, on behalf
  of the caller that submitted the job: a :class:`~facesearch.services.search.Delegation`,
  refused by the gate once that caller's key may no longer act).
- Jobs are rows in the service's database (:mod:`facesearch.media.job_table`; their results
  too, :mod:`facesearch.media.job_results`), run by ``workers`` threads, can be cancelled,
  report progress (percent of the video's duration) and, when they end, notify a webhook
  and/or an SNS topic (:mod:`facesearch.media.job_notify`). Jobs found in progress when the
  service starts (:meth:`VideoJobs.start`) whose process is gone are run again from the start
  if their input is still there, else failed with the reason.

Every similarity is a candidate for human review, never an identification.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from facesearch.errors import (
    AccessDeniedError,
    ConflictError,
    DelegationEndedError,
    FaceSearchError,
    IdempotencyMismatchError,
    InvalidParameterError,
    InvalidVideoError,
    ThrottledError,
)
from facesearch.governance.keys import AccessKeys
from facesearch.media.candidates import best_matches
from facesearch.media.job_inputs import JobInputs
from facesearch.media.job_notify import JobNotifier
from facesearch.media.job_results import JobResults
from facesearch.media.job_table import JobTable, owner_token
from facesearch.media.sns import SnsPublisher
from facesearch.media.video_job import (
    MAX_VIDEO_BYTES,
    TERMINAL,
    UNREADABLE_MESSAGE,
    JobKind,
    JobStatus,
    VideoInput,
    VideoJob,
    caller_of_row,
    job_from_row,
    video_columns,
)
from facesearch.media.webhook import OPEN, EgressPolicy, validate_url
from facesearch.services.collection import FaceCollections
from facesearch.services.search import Delegation, Match, SearchGate
from facesearch.storage.store import Store
from facesearch.types import Caller
from facesearch.video.frames import VideoInfo, probe
from facesearch.video.scan import ScanStopped, VideoJobSettings, VideoScan, scan_video

if TYPE_CHECKING:
    from facesearch.services.cluster import PipelineSpec, RayCluster

log = logging.getLogger(__name__)


class VideoJobs:
    """Asynchronous video face search and face detection jobs on one data directory.

    ``workers`` jobs run at once; at most ``max_queued`` wait. Its collaborators: ``table``
    (the jobs' rows), ``inputs`` (server paths under ``path_roots`` when given, uploads),
    ``results`` (reading a job's results: ``fs.video.results.persons(job_id)``...) and
    ``notifier`` (webhooks and SNS, with ``sns``).
    """

    MAX_ATTEMPTS = 3

    def __init__(self, home: Path, store: Store, collections: FaceCollections,
                 search: SearchGate, *, workers: int = 1, max_queued: int = 100,
                 max_video_bytes: int = MAX_VIDEO_BYTES,
                 per_key: tuple[int, int] = (10, 1024**3),
                 path_roots: Sequence[Path] | None = None,
                 clock: Callable[[], float] = time.time,
                 keys: AccessKeys | None = None, egress: EgressPolicy = OPEN,
                 cluster: RayCluster | None = None,
                 pipeline_spec: PipelineSpec | None = None,
                 sns: SnsPublisher | None = None) -> None:
        if workers < 1:
            raise InvalidParameterError("video workers must be at least 1")
        if cluster is not None and pipeline_spec is None:
            raise InvalidParameterError("video scans on a Ray cluster need a pipeline spec")
        self.home = home
        self.store = store
        self.collections = collections
        self.search = search
        self.workers = workers
        self.max_queued = max_queued
        self.clock = clock
        self.keys = keys
        self.egress = egress
        self.cluster = cluster
        """Scans run as Ray tasks on it (with ``pipeline_spec``'s pipeline), else here."""
        self.pipeline_spec = pipeline_spec
        self.table = JobTable(store, clock, self._case)
        self.inputs = JobInputs(self.table, home / "video" / "uploads",
                                max_video_bytes=max_video_bytes, per_key=per_key,
                                path_roots=path_roots)
        self.results = JobResults(store, self.table, search.trail)
        self._stop = threading.Event()
        self.notifier = JobNotifier(self.table, egress=egress, sns=sns, stop=self._stop)
        self._owner = owner_token()
        self._queue: queue.Queue[str] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._reasons: dict[str, str] = {}
        if keys is not None:
            keys.revoke_hooks.append(self._key_revoked)

    @property
    def sns(self) -> SnsPublisher | None:
        """Publishes completion messages to SNS topics (None: jobs that name a topic are
        refused)."""
        return self.notifier.sns

    @property
    def path_roots(self) -> list[Path] | None:
        """The folders server paths must lie under (None: any path)."""
        return self.inputs.path_roots

    def _case(self, caller: Caller | None) -> str | None:
        return None if self.keys is None else self.keys.case_of(caller)

    def _key_revoked(self, key_id: str) -> None:
        """Cancel, at once, every job in progress that the revoked key submitted."""
        for job_id in self.table.running_of(key_id):
            self._reasons[job_id] = f"cancelled: the access key {key_id} was revoked"
            self.cancel(job_id)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, *, recover: bool = True) -> list[str]:
        """Start the worker threads; with ``recover``, take over jobs left in progress by a
        process that is gone (run again from the start, or failed when their input is gone).
        Returns the ids of the jobs taken over."""
        self._ensure_workers()
        return self.recover() if recover else []

    def _ensure_workers(self) -> None:
        with self._lock:
            if self._stop.is_set():
                raise ConflictError("the video job service is shut down")
            while len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"video-job-{len(self._threads)}",
                                     daemon=True)
                self._threads.append(t)
                t.start()

    def recover(self) -> list[str]:
        """Requeue (or fail) jobs in progress whose owning process is gone: those of this host's
        processes and those without an owner. Another host's jobs are left to it (its uploads
        are in its data directory). Of several processes recovering at once, one takes a job."""
        taken, failed = self.table.recover(self._owner, self.MAX_ATTEMPTS)
        if taken:
            self._ensure_workers()
        for job_id in taken:
            self._queue.put(job_id)
        for job_id in failed:
            self._ended(job_id)
        return taken

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the workers. Running jobs stop where they are and stay IN_PROGRESS, to be run
        again by the next :meth:`start`."""
        self._stop.set()
        with self._lock:
            for ev in self._cancel.values():
                ev.set()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.table.release_owned(self._owner)

    # -- submitting ----------------------------------------------------------------------

    def start_face_search(self, collection: str, video: VideoInput, *,
                          settings: VideoJobSettings | None = None, job_tag: str | None = None,
                          webhook_url: str | None = None, client_request_token: str | None = None,
                          source_name: str | None = None, caller: Caller | None = None,
                          sns_topic_arn: str | None = None,
                          unreadable_fails_job: bool = False) -> str:
        """Queue a search of the faces of ``video`` against ``collection``; returns the job id.

        The same ``client_request_token`` returns the first job's id (idempotent retries).
        ``webhook_url`` gets a POST and ``sns_topic_arn`` Rekognition's completion message
        when the job ends. A video that cannot be read is refused (InvalidVideoError), or
        with ``unreadable_fails_job`` (Rekognition) accepted as a job that is FAILED at once
        with :data:`~facesearch.media.video_job.UNREADABLE_MESSAGE`.
        """
        s = settings or VideoJobSettings()
        self.notifier.check_sns(sns_topic_arn)
        # Refused (and audited) now, before the upload is kept, if the policy would refuse it;
        # the job's batches are then not rate limited again.
        self.search.admit(collection, operation="search.video", caller=caller,
                          threshold=s.threshold, max_results=s.max_results, rate_limit=False)
        return self._submit(JobKind.FACE_SEARCH, collection, video, settings, job_tag,
                            webhook_url, client_request_token, source_name, caller,
                            sns_topic_arn, unreadable_fails_job)

    def start_face_detection(self, video: VideoInput, *, settings: VideoJobSettings | None = None,
                             job_tag: str | None = None, webhook_url: str | None = None,
                             client_request_token: str | None = None,
                             source_name: str | None = None,
                             caller: Caller | None = None,
                             sns_topic_arn: str | None = None,
                             unreadable_fails_job: bool = False) -> str:
        """Queue detection (and tracking) of the faces of ``video``; returns the job id
        (``unreadable_fails_job``: as :meth:`start_face_search`)."""
        return self._submit(JobKind.FACE_DETECTION, None, video, settings, job_tag, webhook_url,
                            client_request_token, source_name, caller, sns_topic_arn,
                            unreadable_fails_job)

    def _prior(self, kind: JobKind, token: str | None) -> str | None:
        """The id of the job already submitted with client request token ``token``."""
        if token is None:
            return None
        if not 1 <= len(token) <= 64:
            raise InvalidParameterError("client request token must be 1-64 characters")
        prior = self.table.by_token(token)
        if prior is not None and prior[1] != kind.value:
            raise IdempotencyMismatchError(f"client request token {token!r} was used for "
                                           f"another kind of job")
        return None if prior is None else prior[0]

    def _submit(self, kind: JobKind, collection: str | None, video: VideoInput,
                settings: VideoJobSettings | None, job_tag: str | None, webhook_url: str | None,
                token: str | None, source_name: str | None, caller: Caller | None,
                sns_topic_arn: str | None = None, unreadable_fails_job: bool = False) -> str:
        settings = settings or VideoJobSettings()
        self.notifier.check_sns(sns_topic_arn)
        if webhook_url is not None:
            validate_url(webhook_url, self.egress)
        if job_tag is not None and not 1 <= len(job_tag) <= 1024:
            raise InvalidParameterError("job tag must be 1-1024 characters")
        prior = self._prior(kind, token)
        if prior is not None:
            return prior
        with self._lock:
            if self._stop.is_set():
                raise ConflictError("the video job service is shut down")
        waiting = self.table.waiting()
        if waiting >= self.max_queued:
            raise ThrottledError(f"{waiting} video jobs are waiting; try again later",
                                 retry_after=30)
        c = caller or Caller.local()
        self.inputs.check_parked(c.actor, 0)
        job_id = str(uuid.uuid4())
        path, owned, label = self.inputs.materialise(job_id, video, source_name)
        failed: str | None = None  # why a job is FAILED from the start
        try:
            if owned:
                self.inputs.check_parked(c.actor, path.stat().st_size)
            try:
                info: VideoInfo | None = probe(path, label)
            except InvalidVideoError:
                if not unreadable_fails_job:
                    raise
                info, failed = None, UNREADABLE_MESSAGE
            now = self.clock()
            self.table.insert(
                job_id=job_id, kind=kind.value,
                status=(JobStatus.IN_PROGRESS if failed is None else JobStatus.FAILED).value,
                status_message=failed, finished_at=None if failed is None else now,
                progress=0.0, collection=collection, source=label, input_path=str(path),
                owned_input=int(owned), settings=settings.model_dump_json(),
                job_tag=job_tag, client_token=token, webhook_url=webhook_url,
                sns_topic_arn=sns_topic_arn, caller_actor=c.actor, caller_role=c.role,
                caller_purpose=c.purpose, caller_case=c.case_ref, caller_client=c.client,
                owner=self._owner, attempts=0, **video_columns(info), created_at=now,
                updated_at=now)
        except BaseException:
            if owned:
                path.unlink(missing_ok=True)
            raise
        if failed is not None:
            self._ended(job_id)
            return job_id
        self._ensure_workers()
        self._queue.put(job_id)
        return job_id

    # -- reading and control -----------------------------------------------------------

    def describe(self, job_id: str, *, caller: Caller | None = None) -> VideoJob:
        """The job (``caller``: a case-bound key sees only its case's jobs)."""
        return job_from_row(self.table.row(job_id, caller))

    def wait(self, job_id: str, timeout_s: float | None = None) -> VideoJob:
        """The job once it has ended (or as it is when ``timeout_s`` passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.describe(job_id)
            if job.status in TERMINAL:
                return job
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return job
            with self._done:
                self._done.wait(left)

    def cancel(self, job_id: str, *, caller: Caller | None = None) -> VideoJob:
        """Cancel a waiting or running job (a no-op on a finished one)."""
        row = self.table.row(job_id, caller)
        with self._lock:
            ev = self._cancel.get(job_id)
            if ev is not None:
                ev.set()
        if ev is None:
            if self.table.cancel_waiting(
                    job_id, self._reasons.get(job_id, "cancelled before it started")):
                # The reason is used up only here: a job that started meanwhile reads it
                # when it stops.
                self._reasons.pop(job_id, None)
                self._ended(job_id)
            elif job_from_row(row).status is JobStatus.IN_PROGRESS:
                # Running in another process: ask it through the database.
                self.table.request_cancel(job_id)
        return self.describe(job_id)

    def delete(self, job_id: str, *, caller: Caller | None = None) -> None:
        """Delete a finished job and its results."""
        job = self.describe(job_id, caller=caller)
        if job.status not in TERMINAL:
            raise ConflictError(f"video job {job_id} is still in progress; cancel it first")
        self.table.delete(job_id)

    # -- running -----------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        row = self.table.claim(job_id, self._owner)
        if row is None:
            return
        cancel = threading.Event()
        with self._lock:
            self._cancel[job_id] = cancel
        job = job_from_row(row)
        last_write = [0.0]

        def progress(fraction: float) -> None:
            now = time.monotonic()
            if now - last_write[0] < 1.0:
                return
            last_write[0] = now
            if self.table.progress(job_id, fraction):
                cancel.set()

        try:
            try:
                scan = self._scan(row._mapping["input_path"], job,  # type: ignore[attr-defined]
                                  progress, cancel)
                per_person = (self._search(job, scan, caller_of_row(row), cancel)
                              if job.kind is JobKind.FACE_SEARCH else {})
                self.results.keep(row.id, scan, per_person)  # type: ignore[attr-defined]
            except ScanStopped:
                if self._stop.is_set():
                    self.table.release(job_id)
                    return
                self.table.end(job_id, JobStatus.CANCELLED,
                               self._reasons.pop(job_id, "cancelled"))
            except FaceSearchError as exc:
                self.table.end(job_id, JobStatus.FAILED, exc.message)
            except Exception as exc:  # a worker records any failure as the job's reason
                log.exception("video job %s failed", job_id)
                self.table.end(job_id, JobStatus.FAILED,
                               f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
        self._ended(job_id)
        with self._done:
            self._done.notify_all()

    def _ended(self, job_id: str) -> None:
        """Once a job has ended: delete its upload, send its notifications."""
        self.inputs.finish(job_id)
        self.notifier.notify(job_id)

    def _scan(self, path: str, job: VideoJob, progress: Callable[[float], None],
              cancel: threading.Event) -> VideoScan:
        """Scan the job's video here, or in a Ray task (no progress until it is done)."""
        embed = job.kind is JobKind.FACE_SEARCH
        if self.cluster is None:
            return scan_video(path, self.collections.pipeline.for_thread(), job.settings,
                              embed=embed, info=job.video, on_progress=progress,
                              should_stop=cancel.is_set)
        assert self.pipeline_spec is not None
        scan = self.cluster.scan_video(path, self.pipeline_spec, job.settings, embed=embed,
                                       info=job.video, should_stop=cancel.is_set)
        if scan is None:
            raise ScanStopped
        return scan

    def _search(self, job: VideoJob, scan: VideoScan, caller: Caller,
                cancel: threading.Event) -> dict[int, list[Match]]:
        """Each person's candidates, searched in batches on behalf of the job's submitter
        (the gate refuses a batch once the submitter's key may no longer act)."""
        assert job.collection is not None
        per_vector: list[list[Match]] = []
        chunk = 1000
        delegation = Delegation(caller)
        for start in range(0, len(scan.embeddings), chunk):
            vecs = scan.embeddings[start:start + chunk]
            for attempt in range(10):
                try:
                    res = self.search.by_vectors(
                        job.collection, vecs, operation="search.video",
                        max_results=job.settings.max_results,
                        threshold=job.settings.threshold, delegation=delegation,
                        search_id=job.job_id)
                    per_vector.extend(r.matches for r in res.results)
                    break
                except DelegationEndedError as exc:
                    raise AccessDeniedError(f"stopped before searching: {exc.message}") from None
                except ThrottledError as exc:
                    if attempt == 9 or cancel.wait(exc.retry_after):
                        raise
        out: dict[int, list[Match]] = {}
        tracks = scan.embedding_tracks.tolist()
        for person in sorted(set(tracks)):
            out[person] = best_matches([per_vector[i] for i, t in enumerate(tracks)
                                        if t == person], job.settings.max_results)
        return out

    # Last in the class: below it, ``list`` in annotations would mean this method.
    def list_jobs(self, *, status: JobStatus | None = None, limit: int = 100,
             next_token: str | None = None,
             caller: Caller | None = None) -> tuple[list[VideoJob], str | None]:
        """Jobs, newest first, a page at a time (a case-bound ``caller``: its case's only)."""
        return self.table.page(status, limit, next_token, caller)
