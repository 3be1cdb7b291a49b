"""Stored video: decoding, tracking, and face search / face detection jobs on a real clip.

The clip (short_hamilton_clip.mp4, 9.2 s) shows Lin-Manuel Miranda on stage (small at the
start, then close-ups from about 2.8 s to 7.5 s, in several shots), Alex Lacamoire in profile
and audience shots.
"""

from __future__ import annotations

import io
import itertools
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import update

from facesearch.config import Settings
from facesearch.errors import (
    CollectionNotFoundError,
    InvalidParameterError,
    InvalidVideoError,
    JobNotFoundError,
    NotFoundError,
)
from facesearch.governance.policy import CollectionPolicy
from facesearch.media.job_table import released_token
from facesearch.media.video_job import JobKind, JobStatus
from facesearch.service import FaceSearch
from facesearch.storage.schema import jobs_t, thumbnails_t
from facesearch.types import Caller
from facesearch.video.frames import frame_at, iter_frames, probe
from facesearch.video.scan import VideoJobSettings
from facesearch.video.tracking import IouTracker, iou_matrix
from facesearch.vision.pipeline import Pipeline

from ..clirun import CliResult, run_cli
from ..conftest import face
from .video_helpers import (
    ALEX_PHOTO,
    CLIP_MS,
    LIN,
    LIN_PHOTO,
    WebhookReceiver,
    clip,
    wait_for,
    watchlist,
)

FAST = VideoJobSettings(sample_fps=3)

pytestmark = pytest.mark.databases  # job rows on SQLite and on PostgreSQL


@pytest.fixture
def fs(pipeline: Pipeline, settings: Callable[..., Settings]) -> Iterator[FaceSearch]:
    """A service on a fresh data directory whose webhooks may reach the loopback receiver."""
    service = FaceSearch(settings(egress_allow="127.0.0.1/32"), pipeline=pipeline)
    yield service
    service.shutdown()


# -- tracking ---------------------------------------------------------------------------------

def _box(x: float, y: float, s: float = 50) -> list[float]:
    return [x, y, x + s, y + s]


def test_tracker_follows_moving_faces_and_ends_lost_ones() -> None:
    tr = IouTracker(iou_threshold=0.3, max_gap_ms=500)
    a, b = _box(0, 0), _box(300, 100)
    ids, ended = tr.update(np.array([a, b], np.float32), 0)
    assert ids.tolist() == [0, 1] and ended == []
    # Both move 20 px right per 100 ms; the order of the detections changes.
    for step in range(1, 6):
        dx = 20 * step
        ids, _ = tr.update(np.array([_box(300 + dx, 100), _box(dx, 0)], np.float32), 100 * step)
        assert ids.tolist() == [1, 0]
    # Too far between two frames for IoU alone (0.25 < 0.3): the velocity keeps the id.
    tr2 = IouTracker(iou_threshold=0.3, max_gap_ms=2000)
    for x, t in ((0, 0), (15, 500), (45, 1500), (75, 2500)):
        ids, _ = tr2.update(np.array([_box(x, 0)], np.float32), t)
        assert ids.tolist() == [0]
    # A face unseen for longer than max_gap_ms ends; a new one gets a new id.
    ids, ended = tr.update(np.array([_box(100, 0)], np.float32), 1200)
    assert ended == [0, 1] and ids.tolist() == [2]


def test_iou_matrix() -> None:
    m = iou_matrix(np.array([_box(0, 0, 10)], np.float32),
                   np.array([_box(0, 0, 10), _box(5, 0, 10), _box(50, 50, 10)], np.float32))
    assert m.shape == (1, 3)
    assert m[0, 0] == pytest.approx(1.0) and m[0, 1] == pytest.approx(1 / 3) and m[0, 2] == 0


# -- decoding ---------------------------------------------------------------------------------

def test_probe_and_sampled_frames() -> None:
    info = probe(clip())
    assert (info.width, info.height, info.codec) == (640, 360, "h264")
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.frame_count == 275 and abs(info.duration_ms - CLIP_MS) <= 40
    # Its video starts 852 ms into the file's timeline (a player shows timestamp t there + t).
    assert info.start_ms == 852
    ts = [f.timestamp_ms for f in iter_frames(clip(), sample_fps=2)]
    assert ts[0] == 0 and all(b - a >= 450 for a, b in itertools.pairwise(ts))
    assert len(ts) == 19 and ts[-1] <= CLIP_MS
    frame = next(iter_frames(clip()))
    assert frame.pixels.shape == (360, 640, 3) and frame.pixels.dtype == np.uint8
    # One frame at a time (jump to the frame): the first at or after the time asked.
    every = {f.timestamp_ms: f.pixels for f in iter_frames(clip())}
    for asked in (0, 3000, 5012, 9999):
        got = frame_at(clip(), asked)
        want = min((t for t in every if t >= asked), default=max(every))
        assert got.timestamp_ms == want, asked
        assert np.array_equal(got.pixels, every[want])


def test_not_a_video_is_refused(tmp_path: Path, fs: FaceSearch) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(InvalidVideoError):
        probe(junk)
    with pytest.raises(InvalidVideoError):
        fs.video.start_face_detection(junk)
    with pytest.raises(InvalidVideoError):
        fs.video.start_face_detection(junk.read_bytes(), source_name="junk.mp4")
    with pytest.raises(InvalidVideoError):
        fs.video.start_face_detection(b"")
    with pytest.raises(InvalidVideoError):
        fs.video.start_face_detection(tmp_path / "missing.mp4")
    with pytest.raises(JobNotFoundError):
        fs.video.describe("no-such-job")
    assert not list((fs.home / "video" / "uploads").glob("*"))


def test_policy_refusal_at_submission(fs: FaceSearch) -> None:
    fs.collections.create("strict", policy=CollectionPolicy(require_purpose=True,
                                                            threshold_floor=90))
    with pytest.raises(InvalidParameterError, match="purpose"):
        fs.video.start_face_search("strict", clip())
    with pytest.raises(InvalidParameterError, match="floor"):
        fs.video.start_face_search("strict", clip(), settings=VideoJobSettings(threshold=85),
                                   caller=Caller.local("investigation", "case-1"))
    with pytest.raises(CollectionNotFoundError):
        fs.video.start_face_search("nope", clip())
    assert fs.video.list_jobs() == ([], None)
    refused, _ = fs.audit.query(operation="search.refused")
    assert len(refused) == 2


# -- face search jobs ------------------------------------------------------------------------

def test_face_search_job_reports_lin_with_timestamps_in_the_clip(fs: FaceSearch) -> None:
    watchlist(fs, "hamilton", [LIN_PHOTO, ALEX_PHOTO])
    job_id = fs.video.start_face_search("hamilton", clip(), settings=FAST, job_tag="t1")
    job = fs.video.wait(job_id, timeout_s=300)
    assert job.status is JobStatus.SUCCEEDED, job.status_message
    assert job.progress == 100 and job.kind is JobKind.FACE_SEARCH and job.job_tag == "t1"
    assert job.frames_analysed == 28 and job.video is not None and job.video.width == 640
    assert job.persons and job.matched_persons

    persons = fs.video.results.persons(job_id)
    lin = [p for p in persons if p.matches and p.matches[0].external_id == LIN]
    assert lin, f"Lin-Manuel Miranda not reported: {persons}"
    for p in lin:
        assert 0 <= p.first_ms <= p.last_ms <= CLIP_MS
        assert p.matches[0].similarity >= 80
    # He is on screen in close-up from about 3 s to 7 s.
    seen = sorted({t for p in lin for t in range(p.first_ms, p.last_ms + 1, 100)})
    assert any(3000 <= t <= 7000 for t in seen)
    # Alex Lacamoire is in the clip too, in profile close-ups before Lin's: where he is
    # reported, it is there, never during Lin's close-ups.
    alex = [p for p in persons if p.matches and p.matches[0].external_id == "alex-lacamoire"]
    assert all(p.last_ms < 3000 for p in alex)

    # GetFaceSearch: pages by timestamp, each entry a person at a time with its candidates.
    entries, token, pages = [], None, 0
    while True:
        page = fs.video.results.face_search_results(job_id, max_results=7, next_token=token)
        entries += page.persons
        pages += 1
        token = page.next_token
        if token is None:
            break
    assert pages > 1 and len(entries) == sum(p.detections for p in persons)
    stamps = [(e.timestamp_ms, e.person_index) for e in entries]
    assert stamps == sorted(stamps)
    assert all(0 <= e.timestamp_ms <= CLIP_MS for e in entries)
    lin_entries = [e for e in entries if e.matches and e.matches[0].external_id == LIN]
    assert lin_entries and all(e.matches[0].face_id for e in lin_entries)
    e = lin_entries[0]
    x1, y1, x2, y2 = e.face.box
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360 and 0 < e.face.confidence <= 1
    # A thumbnail of each person (its best view's face) and the frame at any time, while
    # the video (a server path here) is kept.
    thumbs = fs.video.results.thumbnails(job_id)
    spans = {p.person_index: p for p in persons}
    assert {t.person_index for t in thumbs} == set(spans)
    for t in thumbs:
        img = PILImage.open(io.BytesIO(t.jpeg))
        assert img.format == "JPEG" and img.width == img.height <= 160
        assert spans[t.person_index].first_ms <= t.timestamp_ms <= spans[t.person_index].last_ms
    jpeg, w, h = fs.video.results.frame(job_id, lin[0].first_ms)
    assert (w, h) == (640, 360) and PILImage.open(io.BytesIO(jpeg)).size == (640, 360)
    by_index = fs.video.results.face_search_results(job_id, sort_by="INDEX", matched_only=True)
    assert {p.person_index for p in by_index.persons} == {p.person_index for p in persons
                                                          if p.matches}
    with pytest.raises(InvalidParameterError):
        fs.video.results.face_search_results(job_id, next_token="bogus")
    listed, _ = fs.video.list_jobs()
    assert [j.job_id for j in listed] == [job_id]


def test_face_search_without_him_reports_no_match(fs: FaceSearch) -> None:
    watchlist(fs, "others", [ALEX_PHOTO, "biden.jpg"])
    job_id = fs.video.start_face_search("others", clip(), settings=FAST)
    job = fs.video.wait(job_id, timeout_s=300)
    assert job.status is JobStatus.SUCCEEDED, job.status_message
    assert job.persons
    persons = fs.video.results.persons(job_id)
    # Nobody is reported as Lin's look-alike: the people seen during his close-ups (3-7 s)
    # match nobody, and Biden (not in the clip) is never a candidate. Alex Lacamoire, who is in
    # the clip (profile close-ups before 3 s), may be reported there.
    during_lin = [p for p in persons if p.first_ms >= 2900 and p.last_ms <= 7100]
    assert during_lin and all(not p.matches for p in during_lin)
    assert not any(m.external_id == "biden" for p in persons for m in p.matches)
    assert all(p.last_ms < 3000 for p in persons if p.matches)
    page = fs.video.results.face_search_results(job_id)
    assert page.persons


def test_face_detection_job_from_an_upload_with_webhook(fs: FaceSearch) -> None:
    with WebhookReceiver() as hook:
        job_id = fs.video.start_face_detection(
            clip().read_bytes(), settings=VideoJobSettings(sample_fps=1), source_name="clip.mp4",
            webhook_url=hook.url, job_tag="upload", client_request_token="tok-1")
        # The same client request token returns the same job.
        assert fs.video.start_face_detection(clip().read_bytes(),
                                             client_request_token="tok-1") == job_id
        job = fs.video.wait(job_id, timeout_s=300)
        assert job.status is JobStatus.SUCCEEDED, job.status_message
        wait_for(lambda: fs.video.describe(job_id).notification, 10, "the notification")
    assert fs.video.describe(job_id).notification == "delivered"
    assert hook.bodies == [{"JobId": job_id, "Status": "SUCCEEDED", "API": "StartFaceDetection",
                            "JobTag": "upload", "Timestamp": hook.bodies[0]["Timestamp"],
                            "StatusMessage": None, "Video": {"Source": "clip.mp4"}}]
    page = fs.video.results.face_detection_results(job_id)
    assert page.faces and page.next_token is None
    assert all(0 <= f.timestamp_ms <= CLIP_MS and f.timestamp_ms % 1000 < 40 for f in page.faces)
    assert not list((fs.home / "video" / "uploads").glob("*"))  # the upload is gone
    # Thumbnails stay with the job; the frames went with the upload.
    assert len(fs.video.results.thumbnails(job_id)) == job.persons
    with pytest.raises(NotFoundError, match="no longer kept"):
        fs.video.results.frame(job_id, 1000)


@pytest.mark.slow
def test_cancel_and_restart_recovery(pipeline: Pipeline,
                                     settings: Callable[..., Settings]) -> None:
    a = FaceSearch(settings(), pipeline=pipeline)
    watchlist(a, "hamilton", [LIN_PHOTO])
    slow = VideoJobSettings(sample_fps=10)
    cancelled = a.video.start_face_search("hamilton", clip(), settings=slow)
    wait_for(lambda: a.video.describe(cancelled).started_at, 60, "the job to start")
    a.video.cancel(cancelled)
    assert a.video.wait(cancelled, 60).status is JobStatus.CANCELLED

    # A job interrupted by a shutdown stays in progress and runs again at the next start.
    interrupted = a.video.start_face_search("hamilton", clip(), settings=FAST)
    upload = a.video.start_face_search("hamilton", clip().read_bytes(), settings=FAST)
    elsewhere = a.video.start_face_search("hamilton", clip(), settings=FAST)
    wait_for(lambda: a.video.describe(interrupted).started_at, 60, "the job to start")
    a.shutdown()

    b = FaceSearch(settings(), pipeline=pipeline)
    try:
        assert b.video.describe(interrupted).status is JobStatus.IN_PROGRESS
        with b.store.transaction() as conn:
            owners = {r.job_id: r.owner for r in conn.execute(jobs_t.select())}
            # Released by this host's process at shutdown: this host's to resume.
            assert owners[interrupted] == released_token()
            # Another host's job (released there) is left to that host.
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == elsewhere)
                         .values(owner="another-node.example:"))
        # A job whose process died (kill -9) and whose uploaded input is gone fails with why.
        with b.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == upload)
                         .values(owner=f"{socket.gethostname()}:999999999"))
            path = conn.execute(jobs_t.select().where(jobs_t.c.job_id == upload)).one().input_path
        Path(path).unlink()
        taken = b.video.start()
        assert taken == [interrupted]
        assert b.video.recover() == []  # taken once
        assert b.video.describe(elsewhere).status is JobStatus.IN_PROGRESS
        failed = b.video.describe(upload)
        assert failed.status is JobStatus.FAILED and "no longer available" in (
            failed.status_message or "")
        job = b.video.wait(interrupted, 300)
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
        assert any(p.matches and p.matches[0].external_id == LIN
                   for p in b.video.results.persons(interrupted))
        assert b.video.results.thumbnails(interrupted)
        b.video.delete(interrupted)
        with pytest.raises(JobNotFoundError):
            b.video.describe(interrupted)
        with b.store.transaction() as conn:  # the thumbnails went with the job
            assert conn.execute(thumbnails_t.select()).all() == []
    finally:
        b.shutdown()


# -- command line -----------------------------------------------------------------------------

def _cli(home: Path, *args: str) -> CliResult:
    proc = run_cli(*args, env={"FACESEARCH_HOME": str(home), "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_cli_video_search_detect_and_stream_run(home: Path, tmp_path: Path) -> None:
    _cli(home, "collection", "create", "demo")
    _cli(home, "index", "demo", str(face(LIN_PHOTO)), "--workers", "1")
    res = json.loads(_cli(home, "video", "search", "demo", str(clip()), "--fps", "1",
                          "--json").stdout)
    # the shape of GET /v1/video/jobs/{id}/results, every page in one (README, "CLI JSON")
    assert res["job"]["status"] == "SUCCEEDED" and res["job"]["video"]["width"] == 640
    assert res["next_token"] is None and res["faces"] is None
    lin = [p for p in res["persons"] if p["matches"] and p["matches"][0]["external_id"] == LIN]
    assert lin and all(0 <= p["timestamp_ms"] <= CLIP_MS for p in lin)
    det = json.loads(_cli(home, "video", "detect", str(clip()), "--fps", "1", "--json").stdout)
    assert det["faces"] and det["persons"] is None
    assert len(det["faces"][0]["face"]["landmarks"]) == 5
    jsonl = tmp_path / "events.jsonl"
    run = _cli(home, "stream", "run", "demo", str(clip()), "--duration", "5", "--json",
               "--jsonl", str(jsonl))
    events = [json.loads(x) for x in run.stdout.splitlines()]
    assert events and events[0]["identity"] == LIN and events[0]["similarity"] >= 80
    assert [json.loads(x) for x in jsonl.read_text().splitlines()] == events
    assert "processed" in run.stderr


# -- security (issue 11) -------------------------------------------------------------------------

def _key_caller(fs: FaceSearch, role: str = "searcher", case: str | None = None) -> Caller:
    k = fs.keys.create(role, purpose="test" if case else None, case_ref=case).info
    return Caller(actor=k.key_id, role=role, purpose=k.purpose, case_ref=k.case_ref)


def test_case_bound_keys_see_only_their_case_jobs(fs: FaceSearch) -> None:
    """Issue 11 item 2: a key issued for case B listed, read (unaudited) and deleted case A's
    video jobs."""
    watchlist(fs, "watch", [LIN_PHOTO])
    a_key, b_key = _key_caller(fs, case="A"), _key_caller(fs, case="B")
    auditor = _key_caller(fs, role="auditor")  # issued for no case: sees every job
    job_id = fs.video.start_face_search("watch", clip(), settings=VideoJobSettings(sample_fps=1),
                                        caller=a_key)
    assert fs.video.wait(job_id, timeout_s=300).status is JobStatus.SUCCEEDED
    for call in (lambda: fs.video.describe(job_id, caller=b_key),
                 lambda: fs.video.results.face_search_results(job_id, caller=b_key),
                 lambda: fs.video.results.face_detection_results(job_id, caller=b_key),
                 lambda: fs.video.results.persons(job_id, caller=b_key),
                 lambda: fs.video.cancel(job_id, caller=b_key),
                 lambda: fs.video.delete(job_id, caller=b_key)):
        with pytest.raises(JobNotFoundError):
            call()
    assert fs.video.list_jobs(caller=b_key) == ([], None)
    assert [j.job_id for j in fs.video.list_jobs(caller=a_key)[0]] == [job_id]
    assert [j.job_id for j in fs.video.list_jobs(caller=auditor)[0]] == [job_id]
    page = fs.video.results.face_search_results(job_id, caller=a_key)
    persons = fs.video.results.persons(job_id, caller=auditor)
    assert page.persons and persons
    reads = fs.audit.query(operation="video.results.read")[0]
    assert [(r.event.actor, r.event.case_ref) for r in reads] == [(a_key.actor, "A"),
                                                                  (auditor.actor, None)]
    assert reads[0].event.details["job_id"] == job_id
    assert reads[0].event.details["entries"] == len(page.persons)
    fs.video.delete(job_id, caller=a_key)
    with pytest.raises(JobNotFoundError):
        fs.video.describe(job_id)


def test_revoking_a_key_cancels_its_jobs(fs: FaceSearch) -> None:
    """Issue 11 item 1: revocation stops everything the key started, video jobs included."""
    watchlist(fs, "watch", [LIN_PHOTO])
    key = _key_caller(fs)
    job_id = fs.video.start_face_search("watch", clip(),
                                        settings=VideoJobSettings(sample_fps=15), caller=key)
    fs.keys.revoke(key.actor)
    job = fs.video.wait(job_id, timeout_s=300)
    assert job.status is JobStatus.CANCELLED, job
    assert job.status_message and "revoked" in job.status_message
    assert fs.audit.query(actor=key.actor, operation="search.video")[0] == []
