"""A video job's results: every face detected (with its person), each person's candidates and
thumbnail, stored when the job succeeds and read a page at a time (GetFaceSearch,
GetFaceDetection), by person, as thumbnails, or as a frame of the video. Every read is audited
(``video.results.read``); thumbnails are sealed at rest when encryption is on.

Every similarity is a candidate for human review, never an identification.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import delete, func, insert, select, update

from facesearch.errors import EncryptionError, InvalidParameterError, NotFoundError
from facesearch.governance.trail import AuditTrail
from facesearch.media.candidates import VideoMatch
from facesearch.media.job_table import JobTable
from facesearch.media.video_job import (
    MAX_PAGE,
    TERMINAL,
    JobKind,
    JobStatus,
    SortBy,
    VideoJob,
    job_from_row,
    page_args,
)
from facesearch.services.search import Match
from facesearch.storage.crypto import is_sealed
from facesearch.storage.schema import detections_t, jobs_t, matches_t, thumbnails_t
from facesearch.storage.store import Store
from facesearch.types import Caller, FaceView
from facesearch.video.frames import frame_at
from facesearch.video.scan import VideoScan


@dataclass(frozen=True)
class VideoFace:
    """A face seen in a frame: box (x1, y1, x2, y2) and five landmarks in video pixels,
    detector confidence (0-1), inter-ocular size (px), sharpness and brightness (0-100), head
    pose (degrees)."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: list[tuple[float, float]]
    size: float
    sharpness: float
    brightness: float
    yaw: float
    pitch: float
    roll: float

    def view(self) -> FaceView:
        """The face as plain numbers (in video pixels)."""
        return FaceView(self.box, self.confidence,
                        tuple((float(x), float(y)) for x, y in self.landmarks),
                        {"size": self.size, "sharpness": self.sharpness,
                         "brightness": self.brightness, "yaw": self.yaw, "pitch": self.pitch,
                         "roll": self.roll})


@dataclass(frozen=True)
class PersonMatch:
    """One person (``person_index``, a track) at one timestamp (ms), with the person's
    candidates (the same at each of the person's timestamps)."""

    timestamp_ms: int
    person_index: int
    face: VideoFace
    matches: list[VideoMatch]


@dataclass(frozen=True)
class FaceDetection:
    timestamp_ms: int
    face: VideoFace


@dataclass(frozen=True)
class PersonSummary:
    """A person's span in the video (ms), how often seen, and candidates."""

    person_index: int
    first_ms: int
    last_ms: int
    detections: int
    matches: list[VideoMatch]


@dataclass(frozen=True)
class PersonThumbnail:
    """A person's face at its best view (``timestamp_ms``), as a small JPEG."""

    person_index: int
    timestamp_ms: int
    jpeg: bytes


FRAME_MAX_SIDE = 960
"""Largest side (px) of a video frame served to a viewer."""


def _jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _jpeg_scaled(pixels: np.ndarray, max_side: int) -> tuple[bytes, int, int]:
    """``pixels`` as a JPEG scaled to at most ``max_side`` a side, and its size."""
    img = PILImage.fromarray(np.ascontiguousarray(pixels))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue(), img.width, img.height


def _thumbnail_aad(job_row: int, person: int) -> bytes:
    return f"video-thumbnail:{job_row}:{person}".encode()


@dataclass(frozen=True)
class FaceSearchPage:
    job: VideoJob
    persons: list[PersonMatch]
    next_token: str | None


@dataclass(frozen=True)
class FaceDetectionPage:
    job: VideoJob
    faces: list[FaceDetection]
    next_token: str | None


def video_face(r: object) -> VideoFace:
    """A detections row as a :class:`VideoFace`."""
    g = r._mapping  # type: ignore[attr-defined]
    return VideoFace(box=(g["x1"], g["y1"], g["x2"], g["y2"]), confidence=g["confidence"],
                     landmarks=[(float(x), float(y)) for x, y in json.loads(g["landmarks"])],
                     size=g["q_size"], sharpness=g["q_sharpness"], brightness=g["q_brightness"],
                     yaw=g["q_yaw"], pitch=g["q_pitch"], roll=g["q_roll"])


class JobResults:
    """The results of the video jobs of one store (read through ``table``, so a case-bound
    caller reads only its case's jobs), every read audited on ``trail``."""

    def __init__(self, store: Store, table: JobTable, trail: AuditTrail) -> None:
        self.store = store
        self.table = table
        self.trail = trail

    def keep(self, job_row: int, scan: VideoScan,
             per_person: dict[int, list[Match]]) -> None:
        """Store a scan's detections, thumbnails and each person's candidates, and mark the
        job SUCCEEDED, in one transaction (replacing what an earlier attempt stored)."""
        rows = _detection_rows(job_row, scan)
        trows = [{"job_row": job_row, "person": int(person), "timestamp_ms": int(ts),
                  "jpeg": self._seal_thumbnail(job_row, int(person), _jpeg(chip))}
                 for person, (ts, chip) in scan.best_views.items()]
        mrows = [{"job_row": job_row, "person": person, "rank": rank, "face_id": m.face.face_id,
                  "external_id": m.face.external_id, "image_id": m.face.image.image_id,
                  "user_id": m.face.user_id, "similarity": float(m.similarity)}
                 for person, ms in per_person.items() for rank, m in enumerate(ms)]
        now = self.table.clock()
        with self.store.transaction() as conn:
            conn.execute(delete(detections_t).where(detections_t.c.job_row == job_row))
            conn.execute(delete(matches_t).where(matches_t.c.job_row == job_row))
            conn.execute(delete(thumbnails_t).where(thumbnails_t.c.job_row == job_row))
            if rows:
                conn.execute(insert(detections_t), rows)
            if trows:
                conn.execute(insert(thumbnails_t), trows)
            if mrows:
                conn.execute(insert(matches_t), mrows)
            conn.execute(update(jobs_t).where(jobs_t.c.id == job_row).values(
                status=JobStatus.SUCCEEDED.value, status_message=None, progress=100.0,
                frames_analysed=scan.frames, persons=scan.persons,
                matched_persons=sum(1 for ms in per_person.values() if ms),
                finished_at=now, updated_at=now))

    def _seal_thumbnail(self, job_row: int, person: int, jpeg: bytes) -> bytes:
        sealer = self.store.sealer
        return jpeg if sealer is None else sealer.seal(jpeg, _thumbnail_aad(job_row, person))

    def _audit_read(self, job: VideoJob, caller: Caller | None, what: str, n: int) -> None:
        """Record a read of a job's results (who, which job, how many entries)."""
        self.trail.note("video.results.read", caller, collection=job.collection,
                        details={"job_id": job.job_id, "kind": job.kind.value,
                                 "what": what, "entries": n})

    def face_search_results(self, job_id: str, *, max_results: int = MAX_PAGE,
                            next_token: str | None = None, sort_by: SortBy = "TIMESTAMP",
                            matched_only: bool = False,
                            caller: Caller | None = None) -> FaceSearchPage:
        """A page of a face search job's persons (GetFaceSearch). Empty until it SUCCEEDED."""
        offset = page_args(max_results, next_token)
        if sort_by not in ("TIMESTAMP", "INDEX"):
            raise InvalidParameterError(f"sort by must be TIMESTAMP or INDEX, got {sort_by!r}")
        row = self.table.row(job_id, caller)
        job = job_from_row(row)
        if job.kind is not JobKind.FACE_SEARCH:
            raise InvalidParameterError(f"job {job_id} is a face detection job")
        if job.status is not JobStatus.SUCCEEDED:
            return FaceSearchPage(job, [], None)
        jr = row.id  # type: ignore[attr-defined]
        d = detections_t.c
        q = select(detections_t).where(d.job_row == jr)
        if matched_only:
            q = q.where(d.person.in_(select(matches_t.c.person).where(matches_t.c.job_row == jr)))
        order = ((d.timestamp_ms, d.person) if sort_by == "TIMESTAMP"
                 else (d.person, d.timestamp_ms))
        q = q.order_by(*order, d.id).limit(max_results + 1).offset(offset)
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
            persons = sorted({r.person for r in rows[:max_results]})
            matches = _matches(conn, jr, persons)
        page = [PersonMatch(r.timestamp_ms, r.person, video_face(r), matches.get(r.person, []))
                for r in rows[:max_results]]
        nxt = str(offset + max_results) if len(rows) > max_results else None
        self._audit_read(job, caller, "persons", len(page))
        return FaceSearchPage(job, page, nxt)

    def face_detection_results(self, job_id: str, *, max_results: int = MAX_PAGE,
                               next_token: str | None = None,
                               caller: Caller | None = None) -> FaceDetectionPage:
        """A page of a job's detected faces by timestamp (GetFaceDetection)."""
        offset = page_args(max_results, next_token)
        row = self.table.row(job_id, caller)
        job = job_from_row(row)
        if job.status is not JobStatus.SUCCEEDED:
            return FaceDetectionPage(job, [], None)
        d = detections_t.c
        q = (select(detections_t).where(d.job_row == row.id)  # type: ignore[attr-defined]
             .order_by(d.timestamp_ms, d.person, d.id).limit(max_results + 1).offset(offset))
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
        nxt = str(offset + max_results) if len(rows) > max_results else None
        self._audit_read(job, caller, "faces", min(len(rows), max_results))
        return FaceDetectionPage(job, [FaceDetection(r.timestamp_ms, video_face(r))
                                       for r in rows[:max_results]], nxt)

    def persons(self, job_id: str, *,
                caller: Caller | None = None) -> list[PersonSummary]:
        """Each person of a finished job: first and last timestamp, detections, candidates."""
        row = self.table.row(job_id, caller)
        jr = row.id  # type: ignore[attr-defined]
        d = detections_t.c
        with self.store.transaction() as conn:
            spans = conn.execute(
                select(d.person, func.min(d.timestamp_ms), func.max(d.timestamp_ms), func.count())
                .where(d.job_row == jr).group_by(d.person).order_by(d.person)).all()
            matches = _matches(conn, jr, [s[0] for s in spans])
        self._audit_read(job_from_row(row), caller, "person summaries", len(spans))
        return [PersonSummary(int(p), int(a), int(b), int(n), matches.get(int(p), []))
                for p, a, b, n in spans]

    def thumbnails(self, job_id: str, *,
                   caller: Caller | None = None) -> list[PersonThumbnail]:
        """A small JPEG of each person of a finished job (the aligned face of its best view,
        and that view's time); audited as a read of the job's results."""
        row = self.table.row(job_id, caller)
        jr = row.id  # type: ignore[attr-defined]
        with self.store.transaction() as conn:
            rows = conn.execute(select(thumbnails_t).where(thumbnails_t.c.job_row == jr)
                                .order_by(thumbnails_t.c.person)).all()
        out = []
        for r in rows:
            jpeg = r.jpeg
            if is_sealed(jpeg):
                sealer = self.store.sealer
                if sealer is None:
                    raise EncryptionError("video thumbnails are encrypted at rest but no key "
                                          "is configured (FACESEARCH_ENCRYPTION_KEY)")
                jpeg = sealer.open(jpeg, _thumbnail_aad(jr, r.person))
            out.append(PersonThumbnail(int(r.person), int(r.timestamp_ms), jpeg))
        self._audit_read(job_from_row(row), caller, "thumbnails", len(out))
        return out

    def frame(self, job_id: str, timestamp_ms: int, *, max_side: int = FRAME_MAX_SIDE,
              caller: Caller | None = None) -> tuple[bytes, int, int]:
        """The frame of a job's video at ``timestamp_ms`` (the first frame at or after it) as
        a JPEG at most ``max_side`` pixels a side, with its width and height: only while the
        job's video is kept (a server path; uploads are deleted when their job ends,
        NotFoundError). Audited as a read of the job's results."""
        if timestamp_ms < 0:
            raise InvalidParameterError("a frame's time is at least 0 ms")
        row = self.table.row(job_id, caller)
        g = row._mapping  # type: ignore[attr-defined]
        job = job_from_row(row)
        path = Path(g["input_path"])
        if (g["owned_input"] and job.status in TERMINAL) or not path.is_file():
            raise NotFoundError(f"the video of job {job_id} is no longer kept (uploaded videos "
                                "are deleted when their job ends)")
        pixels = frame_at(path, timestamp_ms, label=job.source).pixels
        self._audit_read(job, caller, "frame", 1)
        return _jpeg_scaled(pixels, max_side)


def _detection_rows(job_row: int, scan: VideoScan) -> list[dict[str, object]]:
    """The detections table's rows of a scan's faces."""
    f = scan.faces
    q = f.quality
    if not len(f):
        return []
    assert q is not None
    return [{"job_row": job_row, "person": int(scan.tracks[i]),
             "timestamp_ms": int(scan.timestamps[i]),
             "x1": float(f.boxes[i, 0]), "y1": float(f.boxes[i, 1]),
             "x2": float(f.boxes[i, 2]), "y2": float(f.boxes[i, 3]),
             "confidence": float(f.scores[i]),
             "landmarks": json.dumps(f.landmarks[i].round(1).tolist()),
             "q_size": float(q.size[i]), "q_sharpness": float(q.sharpness[i]),
             "q_brightness": float(q.brightness[i]), "q_yaw": float(q.yaw[i]),
             "q_pitch": float(q.pitch[i]), "q_roll": float(q.roll[i])}
            for i in range(len(f))]


def _matches(conn: object, job_row: int,
             persons: Sequence[int]) -> dict[int, list[VideoMatch]]:
    """The candidates of ``persons`` of a job, best first."""
    out: dict[int, list[VideoMatch]] = {}
    m = matches_t.c
    for start in range(0, len(persons), 500):
        q = (select(matches_t).where(m.job_row == job_row,
                                     m.person.in_(list(persons[start:start + 500])))
             .order_by(m.person, m.rank))
        for r in conn.execute(q):  # type: ignore[attr-defined]
            out.setdefault(r.person, []).append(
                VideoMatch(r.face_id, r.external_id, r.image_id, r.user_id, r.similarity))
    return out
