"""Stored-video jobs and live stream processors over HTTP, against a real server process:
Rekognition's StartFaceSearch / GetFaceSearch / StartFaceDetection / GetFaceDetection with a
real boto3 client on the clip in a moto S3 store (completion messages through moto's SNS to
an SQS queue), Rekognition's stream processors on a camera playing the clip (records through
moto's Kinesis), and the native API (uploads, server paths, results, stream processors with
their Server-Sent Events and WebSocket feeds) with httpx.

The clip (../shared/testdata/faces/short_hamilton_clip.mp4, 9.2 s) shows Lin-Manuel Miranda
from about 2.8 s to 7.5 s; the watchlists hold his photo and Alex Lacamoire's, or Alex's and
Joe Biden's."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from facesearch.video.containers import FILE_REFUSED

from ..conftest import FACES
from ..media.video_helpers import (
    ALEX_PHOTO,
    CLIP_MS,
    CLIP_NAME,
    LIN,
    LIN_PHOTO,
    clip,
    hls,
    remux_segment,
    wait_for,
)
from .conftest import (
    S3_BUCKET,
    S3_CREDS,
    KinesisReader,
    Server,
    aws_env,
    image_bytes,
    kinesis_stream,
    sns_to_sqs,
    sqs_message,
    start_server,
    stop_server,
)

CLIP_KEY = f"videos/{CLIP_NAME}"
WITH_LIN = "vid-lin"
WITHOUT_LIN = "vid-others"
STRICT = "vid-strict"
JOB_TIMEOUT_S = 600
PURPOSE = {"X-Facesearch-Purpose": "test", "X-Facesearch-Case": "case-7"}


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second video path root of the server, writable by the tests."""
    return tmp_path_factory.mktemp("video-root")


@pytest.fixture(scope="module")
def vserver(tmp_path_factory: pytest.TempPathFactory, s3_url: str,
            video_root: Path) -> Iterator[Server]:
    """A server whose video path roots are the test photos' folder and ``video_root``, with
    the clip in S3 and three collections: with Lin, without him, and one whose policy
    requires a purpose."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                      aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"])
    s3.put_object(Bucket=S3_BUCKET, Key=CLIP_KEY, Body=clip().read_bytes())
    root = tmp_path_factory.mktemp("api-video")
    srv = start_server(root / "home", root / "server.log",
                       FACESEARCH_API_WORKERS="1",
                       FACESEARCH_API_S3_ENDPOINT_URL=s3_url,
                       FACESEARCH_API_S3_ACCESS_KEY_ID=S3_CREDS["AWS_ACCESS_KEY_ID"],
                       FACESEARCH_API_S3_SECRET_ACCESS_KEY=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
                       FACESEARCH_API_VIDEO_PATH_ROOTS=os.pathsep.join([str(FACES),
                                                                        str(video_root)]),
                       **aws_env(s3_url))
    try:
        admin, indexer = srv.rekognition("admin"), srv.rekognition("indexer")
        for coll, photos in ((WITH_LIN, [LIN_PHOTO, ALEX_PHOTO]),
                             (WITHOUT_LIN, [ALEX_PHOTO, "biden.jpg"]), (STRICT, [LIN_PHOTO])):
            admin.create_collection(CollectionId=coll)
            for photo in photos:
                out = indexer.index_faces(CollectionId=coll, Image={"Bytes": image_bytes(photo)},
                                          ExternalImageId=Path(photo).stem, MaxFaces=1)
                assert len(out["FaceRecords"]) == 1, photo
        with srv.native("admin") as c:
            r = c.put(f"/v1/collections/{STRICT}/policy",
                      json={"require_purpose": True, "threshold_floor": 90})
            assert r.status_code == 200, r.text
        yield srv
    finally:
        stop_server(srv)


def searcher(server: Server, headers: dict[str, str] | None = None) -> Any:
    """A boto3 Rekognition client for the searcher key, sending purpose/case headers."""
    rek = server.rekognition("searcher")

    def add(request: Any, **_: Any) -> None:
        for k, v in (headers or {}).items():
            request.headers[k] = v

    rek.meta.events.register("before-sign.rekognition.*", add)
    return rek


def video(key: str = CLIP_KEY) -> dict[str, Any]:
    return {"S3Object": {"Bucket": S3_BUCKET, "Name": key}}


@pytest.fixture(scope="module")
def rek_jobs(vserver: Server, s3_url: str) -> dict[str, str]:
    """Rekognition jobs, submitted together (they run one after another on the server); the
    first notifies an SNS topic, read from the SQS queue ``queue`` subscribed to it."""
    rek = searcher(vserver, PURPOSE)
    token = uuid.uuid4().hex
    topic, queue = sns_to_sqs(s3_url, "hamilton-done")
    lin = {"Video": video(), "CollectionId": WITH_LIN, "JobTag": "hamilton",
           "ClientRequestToken": token,
           "NotificationChannel": {"SNSTopicArn": topic,
                                   "RoleArn": "arn:aws:iam::123456789012:role/video"}}
    jobs = {
        "queue": queue,
        "lin": rek.start_face_search(**lin)["JobId"],
        "others": rek.start_face_search(Video=video(), CollectionId=WITHOUT_LIN,
                                        FaceMatchThreshold=80)["JobId"],
        "detect": rek.start_face_detection(Video=video(), FaceAttributes="DEFAULT")["JobId"],
    }
    # ClientRequestToken: a retry gets the first job back; other parameters are refused.
    assert rek.start_face_search(**lin)["JobId"] == jobs["lin"]
    with pytest.raises(rek.exceptions.IdempotentParameterMismatchException):
        rek.start_face_search(Video=video(), CollectionId=WITH_LIN, ClientRequestToken=token)
    return jobs


def finished(get: Any, job_id: str) -> dict[str, Any]:
    """Poll a Get* operation until the job is no longer IN_PROGRESS."""
    def done() -> dict[str, Any] | None:
        out: dict[str, Any] = get(JobId=job_id, MaxResults=1)
        return None if out["JobStatus"] == "IN_PROGRESS" else out

    out = wait_for(done, JOB_TIMEOUT_S, f"video job {job_id}", every_s=1)
    assert out is not None and out["JobStatus"] == "SUCCEEDED", out
    return out


def all_pages(get: Any, key: str, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages, token = 0, None
    while True:
        out = get(**kwargs, **({"NextToken": token} if token else {}))
        items += out[key]
        pages += 1
        token = out.get("NextToken")
        if not token:
            return items, pages


def check_ratio_box(b: dict[str, float]) -> None:
    assert set(b) == {"Width", "Height", "Left", "Top"}
    assert 0 < b["Width"] <= 1 and 0 < b["Height"] <= 1
    assert -0.2 < b["Left"] < 1 and -0.2 < b["Top"] < 1


def check_face_detail(d: dict[str, Any]) -> None:
    check_ratio_box(d["BoundingBox"])
    assert {m["Type"] for m in d["Landmarks"]} == {"eyeLeft", "eyeRight", "nose", "mouthLeft",
                                                   "mouthRight"}
    assert all(-0.2 <= m["X"] <= 1.2 and -0.2 <= m["Y"] <= 1.2 for m in d["Landmarks"])
    assert set(d["Pose"]) == {"Roll", "Yaw", "Pitch"}
    assert set(d["Quality"]) == {"Brightness", "Sharpness"}
    assert 0 < d["Confidence"] <= 100


def code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


# -- Rekognition: StartFaceSearch / GetFaceSearch ---------------------------------------------

def test_rekognition_face_search_finds_lin(vserver: Server, rek_jobs: dict[str, str],
                                          s3_url: str) -> None:
    rek = searcher(vserver)
    job_id = rek_jobs["lin"]
    # As AWS's example waits: on the SQS queue subscribed to the job's SNS topic.
    done = sqs_message(s3_url, rek_jobs["queue"], JOB_TIMEOUT_S)
    assert (done["JobId"], done["Status"], done["API"], done["JobTag"]) == (
        job_id, "SUCCEEDED", "StartFaceSearch", "hamilton")
    assert done["Video"] == {"S3ObjectName": CLIP_KEY, "S3Bucket": S3_BUCKET}
    head = finished(rek.get_face_search, job_id)
    assert head["JobId"] == job_id and head["JobTag"] == "hamilton"
    assert head["Video"] == video()
    meta = head["VideoMetadata"]
    assert (meta["FrameWidth"], meta["FrameHeight"]) == (640, 360)
    assert abs(meta["DurationMillis"] - CLIP_MS) < 100 and 29 < meta["FrameRate"] < 30.1
    assert meta["Codec"] == "h264" and meta["Format"]

    persons, pages = all_pages(rek.get_face_search, "Persons", JobId=job_id, MaxResults=10)
    assert pages > 1 and persons
    stamps = [(p["Timestamp"], p["Person"]["Index"]) for p in persons]
    assert stamps == sorted(stamps)
    assert all(0 <= t <= CLIP_MS for t, _ in stamps)
    lin = [p for p in persons if p["FaceMatches"]
           and p["FaceMatches"][0]["Face"].get("ExternalImageId") == LIN]
    assert lin, "Lin-Manuel Miranda was not found"
    for p in lin:
        top = p["FaceMatches"][0]
        assert top["Similarity"] >= 80
        uuid.UUID(top["Face"]["FaceId"])
        check_ratio_box(p["Person"]["BoundingBox"])
        check_face_detail(p["Person"]["Face"])
        assert p["Person"]["BoundingBox"] == p["Person"]["Face"]["BoundingBox"]
    # He is on stage from the start, and in close-up from about 2.8 s to 7.5 s.
    lin_times = [p["Timestamp"] for p in lin]
    assert all(0 <= t <= CLIP_MS for t in lin_times)
    assert any(2800 <= t <= 7500 for t in lin_times), lin_times
    # Alex Lacamoire is in the clip too (profile close-ups before Lin's): where he is
    # reported, it is there, never during Lin's close-ups.
    assert all(p["Timestamp"] < 2800 for p in persons
               if p.get("FaceMatches")
               and p["FaceMatches"][0]["Face"].get("ExternalImageId") == "alex-lacamoire")

    by_index, _ = all_pages(rek.get_face_search, "Persons", JobId=job_id, SortBy="INDEX")
    order = [(p["Person"]["Index"], p["Timestamp"]) for p in by_index]
    assert order == sorted(order) and len(by_index) == len(persons)

    # Tokens are opaque and bound to their listing.
    first = rek.get_face_search(JobId=job_id, MaxResults=10)
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.get_face_search(JobId=job_id, NextToken="bogus")
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.get_face_search(JobId=job_id, NextToken=first["NextToken"], SortBy="INDEX")
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.get_face_search(JobId=rek_jobs["others"], NextToken=first["NextToken"])


def test_rekognition_face_search_without_lin(vserver: Server,
                                             rek_jobs: dict[str, str]) -> None:
    rek = searcher(vserver)
    finished(rek.get_face_search, rek_jobs["others"])
    persons, _ = all_pages(rek.get_face_search, "Persons", JobId=rek_jobs["others"])
    assert persons, "faces were tracked"
    assert "Video" in rek.get_face_search(JobId=rek_jobs["others"])
    named = {m["Face"].get("ExternalImageId") for p in persons for m in p["FaceMatches"]}
    assert LIN not in named and "lin-manuel-miranda" not in named


def test_rekognition_face_detection(vserver: Server, rek_jobs: dict[str, str]) -> None:
    rek = searcher(vserver)
    job_id = rek_jobs["detect"]
    head = finished(rek.get_face_detection, job_id)
    assert head["VideoMetadata"]["FrameWidth"] == 640 and "JobTag" not in head
    faces, pages = all_pages(rek.get_face_detection, "Faces", JobId=job_id, MaxResults=25)
    assert pages > 1 and len(faces) > 25
    times = [f["Timestamp"] for f in faces]
    assert times == sorted(times) and all(0 <= t <= CLIP_MS for t in times)
    for f in faces:
        check_face_detail(f["Face"])
    # Each Get* reads its own kind of job.
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.get_face_search(JobId=job_id)
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.get_face_detection(JobId=rek_jobs["lin"])


def test_rekognition_video_errors(vserver: Server) -> None:
    rek = searcher(vserver)
    for get in (rek.get_face_search, rek.get_face_detection):
        with pytest.raises(rek.exceptions.ResourceNotFoundException):
            get(JobId=str(uuid.uuid4()))
        with pytest.raises(rek.exceptions.InvalidParameterException):
            get(JobId="not a job id!")
    with pytest.raises(rek.exceptions.InvalidS3ObjectException):
        rek.start_face_search(Video=video("videos/missing.mp4"), CollectionId=WITH_LIN)
    # Not a video: accepted, then FAILED with Rekognition's StatusMessage (issue 22).
    failed = rek.start_face_detection(Video=video("notes.txt"))["JobId"]
    out = rek.get_face_detection(JobId=failed)
    assert out["JobStatus"] == "FAILED" and out["StatusMessage"] == "Unsupported codec/format."
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.start_face_search(Video=video(), CollectionId="vid-nowhere")
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.start_face_search(Video={}, CollectionId=WITH_LIN)
    # Policy refusals, before any work: purpose and case required, threshold floor.
    with pytest.raises(rek.exceptions.InvalidParameterException, match="purpose"):
        rek.start_face_search(Video=video(), CollectionId=STRICT)
    with pytest.raises(rek.exceptions.InvalidParameterException, match="floor"):
        searcher(vserver, PURPOSE).start_face_search(Video=video(), CollectionId=STRICT,
                                                     FaceMatchThreshold=85)
    # Roles: only searchers start and read video searches.
    for role in ("admin", "indexer", "auditor"):
        with pytest.raises(ClientError) as exc:
            vserver.rekognition(role).start_face_search(Video=video(), CollectionId=WITH_LIN)
        assert code(exc.value) == "AccessDeniedException"
    with pytest.raises(rek.exceptions.ClientError) as exc:
        vserver.rekognition("auditor").get_face_detection(JobId=str(uuid.uuid4()))
    assert code(exc.value) == "AccessDeniedException"


# -- Rekognition: stream processors on a camera, output to Kinesis -----------------------------

CAMERA_ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/hamilton-stage/1700000000000"
ROLE_ARN = "arn:aws:iam::123456789012:role/rekognition-streams"


def test_rekognition_stream_processor_watches_a_camera(vserver: Server, s3_url: str) -> None:
    """The camera watchlist pattern, as a Rekognition program writes it: the operator adds
    the camera (the clip, played as one); the program creates a face search processor whose
    input is the camera's Kinesis video stream ARN and whose output is a Kinesis data stream,
    starts it, and reads Rekognition Video's records from the data stream until Lin-Manuel
    Miranda is matched. The native feeds carry the processor's events as for any other."""
    vserver.cli("cameras", "add", "hamilton-stage", str(clip()), "--label", "stage")
    out_arn = kinesis_stream(s3_url, "stage-matches")
    rek = searcher(vserver)
    settings = {"FaceSearch": {"CollectionId": WITH_LIN, "FaceMatchThreshold": 80}}
    spec: dict[str, Any] = {
        "Input": {"KinesisVideoStream": {"Arn": CAMERA_ARN}},
        "Output": {"KinesisDataStream": {"Arn": out_arn}},
        "Name": "stage", "Settings": settings, "RoleArn": ROLE_ARN}
    made = rek.create_stream_processor(**spec)
    assert made["StreamProcessorArn"].endswith(":streamprocessor/stage")
    with pytest.raises(rek.exceptions.ResourceInUseException):  # the same call again
        rek.create_stream_processor(**spec)
    with pytest.raises(rek.exceptions.AccessDeniedException):  # Tags need TagResource's right
        rek.create_stream_processor(**{**spec, "Name": "stage-tagged", "Tags": {"site": "x"}})
    vserver.rekognition("admin").tag_resource(ResourceArn=made["StreamProcessorArn"],
                                              Tags={"site": "stage"})
    refused = [  # what facesearch cannot honour is refused, never dropped
        {"Input": {"KinesisVideoStream": {"Arn": CAMERA_ARN.replace("hamilton-stage",
                                                                    "no-such-camera")}}},
        {"Settings": {"ConnectedHome": {"Labels": ["PERSON"]}}},
        {"Output": {"S3Destination": {"Bucket": S3_BUCKET}}},
        {"Output": {"KinesisDataStream": {"Arn": out_arn.replace("stage-matches", "absent")}}},
        {"NotificationChannel": {"SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:t"}},
        {"DataSharingPreference": {"OptIn": True}},
        {"KmsKeyId": "alias/streams"},
    ]
    for change in refused:
        with pytest.raises(rek.exceptions.InvalidParameterException):
            rek.create_stream_processor(**{**spec, "Name": "stage-bad", **change})
    with pytest.raises(ClientError) as exc:  # its searches would run as an admin key
        vserver.rekognition("admin").create_stream_processor(**{**spec, "Name": "stage-admin"})
    assert code(exc.value) == "AccessDeniedException"

    d = rek.describe_stream_processor(Name="stage")
    assert d["Status"] == "STOPPED" and d["StreamProcessorArn"] == made["StreamProcessorArn"]
    assert d["Input"]["KinesisVideoStream"]["Arn"] == CAMERA_ARN
    assert d["Output"]["KinesisDataStream"]["Arn"] == out_arn
    assert d["Settings"] == settings and d["RoleArn"] == ROLE_ARN
    assert d["DataSharingPreference"] == {"OptIn": False}
    assert {"Name": "stage", "Status": "STOPPED"} in rek.list_stream_processors()[
        "StreamProcessors"]
    assert rek.list_tags_for_resource(ResourceArn=made["StreamProcessorArn"])["Tags"] == {
        "site": "stage"}
    rek.update_stream_processor(Name="stage", DataSharingPreferenceForUpdate={"OptIn": False})
    for update in ({"DataSharingPreferenceForUpdate": {"OptIn": True}},
                   {"ParametersToDelete": ["RegionsOfInterest"]}):
        with pytest.raises(rek.exceptions.InvalidParameterException):
            rek.update_stream_processor(Name="stage", **update)

    reader = KinesisReader(s3_url, "stage-matches")
    with vserver.native("searcher") as c, c.stream("GET", "/v1/streams/stage/events") as feed:
        events = sse_events(feed)
        assert next(events)[0] == "subscribed"
        rek.start_stream_processor(Name="stage")
        again = searcher(vserver, {"x-amz-meta-attempt": "2"})  # signed apart: not a replay
        with pytest.raises(rek.exceptions.ResourceInUseException):
            again.start_stream_processor(Name="stage")
        records: list[dict[str, Any]] = []

        def lin_record() -> dict[str, Any] | None:
            records.extend(reader.records())
            return next((r for r in records for f in r["FaceSearchResponse"]
                         for m in f["MatchedFaces"] if m["Face"].get("ExternalImageId") == LIN),
                        None)

        record = wait_for(lin_record, 180, "a Kinesis record matching Lin", every_s=1)
        video_info = record["InputInformation"]["KinesisVideo"]
        assert video_info["StreamArn"] == CAMERA_ARN and video_info["FragmentNumber"].isdigit()
        assert abs(video_info["ServerTimestamp"] - time.time()) < 300
        assert 0 <= video_info["FrameOffsetInSeconds"] <= CLIP_MS / 1000 + 1
        assert record["StreamProcessorInformation"] == {"Status": "RUNNING"}
        for face in record["FaceSearchResponse"]:
            check_face_detail(face["DetectedFace"])
            for m in face["MatchedFaces"]:
                assert m["Similarity"] >= 80 and uuid.UUID(m["Face"]["FaceId"])
                check_ratio_box(m["Face"]["BoundingBox"])
        assert rek.describe_stream_processor(Name="stage")["Status"] == "RUNNING"
        deadline = time.monotonic() + 60
        for kind, data in events:  # the native feed, as for any processor
            if kind == "face_match" and data["identity"] == LIN:
                break
            assert time.monotonic() < deadline, "no native event for Lin in time"
        # The writer counts a record once Kinesis acknowledged it, which may be after the
        # reader above saw it.
        def delivered() -> dict[str, Any] | None:
            m: dict[str, Any] = c.get("/v1/streams/stage/metrics").json()["metrics"]
            return m if m["kinesis_delivered"] >= 1 else None

        metrics = wait_for(delivered, 30, "the Kinesis delivery counted")
        assert metrics["kinesis_failed"] == 0
        rek.stop_stream_processor(Name="stage")
    assert rek.describe_stream_processor(Name="stage")["Status"] == "STOPPED"
    rek.delete_stream_processor(Name="stage")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.describe_stream_processor(Name="stage")
    vserver.cli("cameras", "remove", "hamilton-stage")


# -- native: jobs -----------------------------------------------------------------------------

def poll_job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        j: dict[str, Any] = c.get(f"/v1/video/jobs/{job_id}").json()
        return None if j["status"] == "IN_PROGRESS" else j

    job = wait_for(done, JOB_TIMEOUT_S, f"video job {job_id}", every_s=1)
    assert job is not None
    return job


def error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text


def test_native_upload_search_and_results(vserver: Server) -> None:
    with vserver.native("searcher") as c:
        r = c.post("/v1/video/search", headers=PURPOSE,
                   files={"video": (CLIP_NAME, clip().read_bytes(), "video/mp4")},
                   data={"collection": WITH_LIN, "sample_fps": "2", "job_tag": "upload"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "IN_PROGRESS" and job["kind"] == "FACE_SEARCH"
        assert job["source"] == CLIP_NAME and job["video"]["width"] == 640
        assert job["settings"]["sample_fps"] == 2
        job = poll_job(c, job["job_id"])
        assert job["status"] == "SUCCEEDED" and job["progress"] == 100, job
        assert job["frames_analysed"] == 19 and job["matched_persons"] >= 1

        persons = c.get(f"/v1/video/jobs/{job['job_id']}/persons").json()["persons"]
        lin = [p for p in persons if p["matches"] and p["matches"][0]["external_id"] == LIN]
        assert lin and all(0 <= p["first_ms"] <= p["last_ms"] <= CLIP_MS for p in lin)
        assert lin[0]["matches"][0]["similarity"] >= 80

        entries, token, pages = [], None, 0
        while True:
            page = c.get(f"/v1/video/jobs/{job['job_id']}/results",
                         params={"max_results": 4, **({"next_token": token} if token else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["faces"] is None and body["label"]
            entries += body["persons"]
            pages += 1
            token = body["next_token"]
            if token is None:
                break
        assert pages > 1 and len(entries) == sum(p["detections"] for p in persons)
        e = next(e for e in entries if e["matches"] and e["matches"][0]["external_id"] == LIN)
        x1, y1, x2, y2 = e["face"]["box"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360 and len(e["face"]["landmarks"]) == 5
        matched = c.get(f"/v1/video/jobs/{job['job_id']}/results",
                        params={"matched_only": "true", "sort_by": "INDEX"}).json()["persons"]
        assert matched and all(m["matches"] for m in matched)
        error(c.get(f"/v1/video/jobs/{job['job_id']}/results", params={"next_token": "Zm9vOjE"}),
              400, "invalid_pagination_token")

        # A finished job is not cancelled again; it can be deleted.
        assert c.post(f"/v1/video/jobs/{job['job_id']}/cancel").json()["status"] == "SUCCEEDED"
    with vserver.native("auditor") as a:
        assert a.get(f"/v1/video/jobs/{job['job_id']}").json()["job_tag"] == "upload"
        error(a.get(f"/v1/video/jobs/{job['job_id']}/results"), 403, "access_denied")
    with vserver.native("searcher") as c:
        assert c.delete(f"/v1/video/jobs/{job['job_id']}").status_code == 204
        error(c.get(f"/v1/video/jobs/{job['job_id']}"), 404, "job_not_found")


def test_native_path_and_s3_inputs(vserver: Server) -> None:
    with vserver.native("searcher") as c:
        r = c.post("/v1/video/detect", json={"path": str(clip()), "sample_fps": 1})
        assert r.status_code == 202, r.text
        job = poll_job(c, r.json()["job_id"])
        assert job["status"] == "SUCCEEDED" and job["kind"] == "FACE_DETECTION"
        res = c.get(f"/v1/video/jobs/{job['job_id']}/results").json()
        assert res["persons"] is None and res["faces"]
        assert all(0 <= f["timestamp_ms"] <= CLIP_MS for f in res["faces"])

        # Server paths only under FACESEARCH_API_VIDEO_PATH_ROOTS (symlinks and .. resolved).
        error(c.post("/v1/video/detect", json={"path": "/etc/passwd"}), 400, "invalid_parameter")
        error(c.post("/v1/video/detect", json={"path": f"{FACES}/../../etc/passwd"}), 400,
              "invalid_parameter")
        error(c.post("/v1/video/detect", json={"path": str(FACES / "missing.mp4")}), 400,
              "invalid_video")
        # Exactly one input; S3 objects go through the configured store.
        error(c.post("/v1/video/detect", json={}), 400, "invalid_parameter")
        error(c.post("/v1/video/detect", json={"path": str(clip()),
                                               "s3_object": {"bucket": S3_BUCKET,
                                                             "name": CLIP_KEY}}),
              400, "invalid_parameter")
        error(c.post("/v1/video/detect",
                     json={"s3_object": {"bucket": S3_BUCKET, "name": "videos/none.mp4"}}),
              400, "invalid_s3_object")
        error(c.post("/v1/video/search", json={"path": str(clip()), "collection": STRICT}),
              400, "invalid_parameter")
        error(c.post("/v1/video/search", json={"path": str(clip()), "collection": "vid-x"}),
              404, "collection_not_found")
        # An S3 input, cancelled (every frame analysed: it runs long enough to be caught).
        r = c.post("/v1/video/search", headers=PURPOSE,
                   json={"s3_object": {"bucket": S3_BUCKET, "name": CLIP_KEY},
                         "collection": STRICT, "sample_fps": 30, "threshold": 95})
        assert r.status_code == 202, r.text
        s3_job = r.json()
        assert s3_job["source"] == f"s3://{S3_BUCKET}/{CLIP_KEY}"
        assert c.post(f"/v1/video/jobs/{s3_job['job_id']}/cancel").status_code == 200
        assert poll_job(c, s3_job["job_id"])["status"] == "CANCELLED"
        # Rekognition knows no CANCELLED: FAILED, with the reason.
        rek = searcher(vserver).get_face_search(JobId=s3_job["job_id"])
        assert rek["JobStatus"] == "FAILED" and rek["StatusMessage"].startswith("CANCELLED")
        assert rek["Persons"] == [] and rek["Video"]["S3Object"]["Name"] == CLIP_KEY

        listed = c.get("/v1/video/jobs", params={"max_results": 1}).json()
        assert len(listed["jobs"]) == 1 and listed["next_token"]
        nxt = c.get("/v1/video/jobs", params={"max_results": 1,
                                              "next_token": listed["next_token"]}).json()
        assert nxt["jobs"][0]["job_id"] != listed["jobs"][0]["job_id"]
        ids = {j["job_id"] for j in c.get("/v1/video/jobs").json()["jobs"]}
        assert {job["job_id"], s3_job["job_id"]} <= ids
        done = c.get("/v1/video/jobs", params={"status": "SUCCEEDED"}).json()["jobs"]
        assert done and all(j["status"] == "SUCCEEDED" for j in done)
    with vserver.native("indexer") as i:
        error(i.post("/v1/video/detect", json={"path": str(clip())}), 403, "access_denied")
        error(i.get("/v1/video/jobs"), 403, "access_denied")


# -- native: stream processors ----------------------------------------------------------------

def sse_events(r: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of a Server-Sent Events response, as they arrive."""
    event, data = "message", ""
    for line in r.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "":
            if data:
                yield event, json.loads(data)
            event, data = "message", ""


def test_stream_processor_with_sse_and_websocket(vserver: Server) -> None:
    searcher_key = vserver.keys["searcher"]
    ws_url = vserver.url.replace("http://", "ws://") + "/v1/streams/cam-file/ws"
    settings = {"input_url": str(clip()), "collection": WITH_LIN, "max_fps": 4,
                "jsonl_path": "cam-file/events.jsonl"}
    with vserver.native("searcher") as c:
        # What a processor may touch on the server is bounded.
        for wrong in ({"input_url": "/etc/hostname"}, {"jsonl_path": "/tmp/events.jsonl"},
                      {"jsonl_path": "../escape.jsonl"}):
            error(c.post("/v1/streams",
                         json={"name": "cam-bad", "settings": {**settings, **wrong}}),
                  400, "invalid_parameter")
        with vserver.native("admin") as admin:  # its searches would run as an admin key
            error(admin.post("/v1/streams", json={"name": "cam-file", "settings": settings}),
                  403, "access_denied")
        r = c.post("/v1/streams", json={"name": "cam-file", "settings": settings})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "STOPPED" and r.json()["metrics"] is None
        assert r.json()["settings"]["jsonl_path"] == "cam-file/events.jsonl"
        error(c.post("/v1/streams", json={"name": "cam-file", "settings": settings}), 409,
              "already_exists")

        with vserver.native(None) as anon:
            assert anon.get("/v1/streams/cam-file/events").status_code == 401
        with connect(ws_url, open_timeout=10) as bad:  # a wrong secret in the first message
            bad.send(json.dumps({"authorization": f"Bearer {searcher_key.key_id}:nope"}))
            assert json.loads(bad.recv(10))["code"] == "invalid_signature"
            with pytest.raises(ConnectionClosed):
                bad.recv(10)
        assert bad.close_code == 4401
        with connect(ws_url, open_timeout=10) as ws:  # first-message authentication
            ws.send(json.dumps({"authorization": f"Bearer {searcher_key.key_id}:"
                                                 f"{searcher_key.secret}"}))
            assert json.loads(ws.recv(10)) == {"type": "subscribed", "processor": "cam-file"}
            with c.stream("GET", "/v1/streams/cam-file/events") as feed:
                assert feed.status_code == 200
                assert feed.headers["content-type"].startswith("text/event-stream")
                events = sse_events(feed)
                assert next(events) == ("subscribed", {"processor": "cam-file"})
                started = c.post("/v1/streams/cam-file/start")
                assert started.status_code == 200, started.text
                error(c.post("/v1/streams/cam-file/start"), 409, "conflict")
                deadline = time.monotonic() + 120
                lin = None
                for kind, data in events:
                    if kind == "face_match" and data["identity"] == LIN:
                        lin = data
                        break
                    assert time.monotonic() < deadline, "no event for Lin in time"
                assert lin is not None
                assert lin["similarity"] >= 80 and lin["processor"] == "cam-file"
                assert lin["frame_width"] == 640 and lin["label"]
                assert 0 <= lin["frame_timestamp_ms"] <= CLIP_MS

                # The same event on the WebSocket.
                while True:
                    msg = json.loads(ws.recv(30))
                    if msg.get("type") == "face_match" and msg["identity"] == LIN:
                        break
                assert msg["event_id"] == lin["event_id"]

                m = c.get("/v1/streams/cam-file/metrics").json()
                assert m["status"] == "RUNNING" and m["metrics"]["frames_processed"] > 0
                assert m["metrics"]["events"] >= 1 and m["metrics"]["subscribers"] == 2
                with vserver.native("auditor") as a:
                    assert a.get("/v1/streams/cam-file").json()["status"] == "RUNNING"
                    error(a.get("/v1/streams/cam-file/events"), 403, "access_denied")
                listed = c.get("/v1/streams").json()["processors"]
                assert [p["name"] for p in listed] == ["cam-file"]

                stopped = c.post("/v1/streams/cam-file/stop").json()
                assert stopped["status"] == "STOPPED" and stopped["metrics"] is None
                assert c.delete("/v1/streams/cam-file").status_code == 204
                # Deleting the processor ends its feeds.
                ends = [k for k, _ in events]
                assert ends[-1] == "end"
            while (msg := json.loads(ws.recv(30))).get("type") != "end":
                pass
        error(c.get("/v1/streams/cam-file"), 404, "stream_processor_not_found")
    lines = (vserver.home / "streams" / "cam-file" / "events.jsonl").read_text().splitlines()
    assert any(json.loads(x)["identity"] == LIN for x in lines)


def test_websocket_handshake_auth_and_unknown_processor(vserver: Server) -> None:
    k = vserver.keys["searcher"]
    base = vserver.url.replace("http://", "ws://")
    with connect(f"{base}/v1/streams/nowhere/ws", open_timeout=10,
                 additional_headers={"Authorization": f"Bearer {k.key_id}:{k.secret}"}) as ws:
        msg = json.loads(ws.recv(10))
        assert msg["type"] == "error" and msg["code"] == "stream_processor_not_found"
        with pytest.raises(ConnectionClosed):
            ws.recv(10)
    assert ws.close_code == 4404
    a = vserver.keys["auditor"]
    with connect(f"{base}/v1/streams/nowhere/ws", open_timeout=10,
                 additional_headers={"Authorization": f"Bearer {a.key_id}:{a.secret}"}) as ws:
        assert json.loads(ws.recv(10))["code"] == "access_denied"
        with pytest.raises(ConnectionClosed):
            ws.recv(10)
    assert ws.close_code == 4403


# -- restarts ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_restart_ends_feeds_and_resumes_processors_and_jobs(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A server shutdown ends live feeds at once; the next start resumes the processors that
    were running and runs the interrupted job again."""
    root = tmp_path_factory.mktemp("api-video-restart")
    env = {"FACESEARCH_API_WORKERS": "1", "FACESEARCH_API_VIDEO_PATH_ROOTS": str(FACES)}
    a = start_server(root / "home", root / "a.log", **env)
    try:
        with a.native("admin") as admin:
            assert admin.post("/v1/collections", json={"name": "watch"}).status_code == 201
        with a.native("indexer") as indexer:
            r = indexer.post("/v1/collections/watch/faces", data={"external_id": LIN},
                             files={"image": (LIN_PHOTO, image_bytes(LIN_PHOTO), "image/png")})
            assert len(r.json()["indexed"]) == 1, r.text
        with a.native("searcher") as c:
            r = c.post("/v1/streams", json={"name": "door", "settings": {
                "input_url": str(clip()), "collection": "watch", "max_fps": 2}})
            assert r.status_code == 201, r.text
            assert c.post("/v1/streams/door/start").status_code == 200
            job = c.post("/v1/video/search", json={"path": str(clip()), "collection": "watch",
                                                   "sample_fps": 10}).json()
            wait_for(lambda: c.get(f"/v1/video/jobs/{job['job_id']}").json()["started_at"], 60,
                     "the job to start")
            with c.stream("GET", "/v1/streams/door/events") as feed:
                events = sse_events(feed)
                assert next(events)[0] == "subscribed"
                t0 = time.monotonic()
                a.proc.terminate()
                kinds = [k for k, _ in events]
                assert kinds and kinds[-1] == "end"
            a.proc.wait(30)
            assert time.monotonic() - t0 < 12, "the feed held the shutdown up"
    finally:
        stop_server(a)
    b = start_server(root / "home", root / "b.log", **env)
    try:
        with b.native("searcher") as c:
            door = wait_for(lambda: (d := c.get("/v1/streams/door").json())["metrics"] and d, 60,
                            "the processor to resume")
            assert door["status"] in ("STARTING", "RUNNING")
            done = poll_job(c, job["job_id"])
            assert done["status"] == "SUCCEEDED" and done["attempts"] == 2, done
            assert done["frames_analysed"] == 92
            assert c.delete("/v1/streams/door").status_code == 204
    finally:
        stop_server(b)


# -- security (issue 11) -------------------------------------------------------------------------

def test_stream_inputs_are_allow_listed_over_http(vserver: Server) -> None:
    """Issue 11 items 3 and 9: ``v4l2:///any/file`` with format ``mov`` bypassed the video
    folder limit; loopback and metadata addresses were reachable as inputs and webhooks."""
    base = {"collection": WITH_LIN}
    with vserver.native("searcher") as c:
        for i, wrong in enumerate((
                {"input_url": "v4l2:///etc/hostname", "input_format": "mov"},
                {"input_url": f"v4l2://{clip()}", "input_format": "mov"},
                {"input_url": "/dev/video0"},  # no local devices unless configured
                {"input_url": str(clip()), "input_format": "hls"},
                {"input_url": "rtmp://example.com/live"},
                {"input_url": "rtsp://127.0.0.1:8554/clip"},
                {"input_url": "http://169.254.169.254/latest/meta-data/"},
                {"input_url": str(clip()), "webhook_url": "http://127.0.0.1:22/"})):
            error(c.post("/v1/streams", json={"name": f"cam-sec-{i}",
                                              "settings": {**base, **wrong}}),
                  400, "invalid_parameter")
        error(c.post("/v1/video/detect", json={"path": str(clip()),
                                               "webhook_url": "http://169.254.169.254/x"}),
              400, "invalid_parameter")
        assert not [p for p in c.get("/v1/streams").json()["processors"]
                    if p["name"].startswith("cam-sec-")]


def test_playlists_are_refused_on_every_video_path(vserver: Server, video_root: Path,
                                                  tmp_path: Path) -> None:
    """Issue 26, high: an uploaded ``.m3u8`` naming ``file:///elsewhere/secret.ts`` made a
    video job read a file outside the video roots and return its people (job SUCCEEDED,
    format hls); a playlist under a root served its segments' frames through ``/frame`` and
    to a stream processor. Every path now refuses it, with no server path in the text."""
    segment = remux_segment(tmp_path / "secret.ts")
    text = hls(segment, url=True)
    under_root = video_root / "playlist.m3u8"
    under_root.write_text(text)
    swapped = video_root / "swapped.mp4"
    swapped.write_bytes(clip().read_bytes())

    def refused(r: httpx.Response) -> None:
        error(r, 400, "invalid_video")
        assert FILE_REFUSED in r.json()["message"]
        assert str(tmp_path) not in r.text and "secret" not in r.text

    with vserver.native("searcher") as c:
        for name in ("upload.m3u8", "upload.mp4"):  # the name does not choose the format
            refused(c.post("/v1/video/detect",
                           files={"video": (name, text.encode(), "application/octet-stream")}))
            refused(c.post("/v1/video/search", headers=PURPOSE,
                           files={"video": (name, text.encode(), "video/mp4")},
                           data={"collection": WITH_LIN}))
        refused(c.post("/v1/video/detect", json={"path": str(under_root)}))

        # A job's video swapped for a playlist after it finished: /frame refuses it.
        r = c.post("/v1/video/detect", json={"path": str(swapped), "sample_fps": 1})
        assert r.status_code == 202, r.text
        job = poll_job(c, r.json()["job_id"])
        assert job["status"] == "SUCCEEDED"
        frame = f"/v1/video/jobs/{job['job_id']}/frame"
        assert c.get(frame, params={"timestamp_ms": 500}).status_code == 200
        swapped.write_text(text)
        refused(c.get(frame, params={"timestamp_ms": 500}))

        # A stream processor playing the playlist as a camera fails, naming why.
        settings = {"input_url": str(under_root), "collection": WITH_LIN, "max_fps": 4}
        r = c.post("/v1/streams", json={"name": "cam-playlist", "settings": settings})
        assert r.status_code == 201, r.text
        assert c.post("/v1/streams/cam-playlist/start").status_code == 200

        def failed() -> dict[str, Any] | None:
            p: dict[str, Any] = c.get("/v1/streams/cam-playlist").json()
            return p if p["status"] == "FAILED" else None

        p = wait_for(failed, 60, "the playlist processor to fail")
        assert FILE_REFUSED in p["status_message"] and str(video_root) not in p["status_message"]
        assert p["metrics"] is None or p["metrics"]["frames_in"] == 0
        assert c.delete("/v1/streams/cam-playlist").status_code == 204


def _client(server: Server, key: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=120,
                        headers={"Authorization": f"Bearer {key['key_id']}:{key['secret']}"})


def test_case_keys_are_confined_and_revocation_ends_feeds(vserver: Server) -> None:
    """Issue 11 items 1 and 2 over HTTP: a case-B key saw case A's jobs and processors; a
    revoked key's processor and feed went on."""
    with vserver.native("admin") as admin:
        keys = {case: admin.post("/v1/keys", json={"role": "searcher", "purpose": "test",
                                                   "case_ref": case}).json()
                for case in ("A", "B")}
        with _client(vserver, keys["A"]) as a, _client(vserver, keys["B"]) as b:
            job = a.post("/v1/video/detect", json={"path": str(clip()), "sample_fps": 1})
            assert job.status_code == 202, job.text
            job_id = job.json()["job_id"]
            assert poll_job(a, job_id)["status"] == "SUCCEEDED"
            assert job_id not in {j["job_id"] for j in b.get("/v1/video/jobs").json()["jobs"]}
            assert [j["job_id"] for j in a.get("/v1/video/jobs").json()["jobs"]] == [job_id]
            for r in (b.get(f"/v1/video/jobs/{job_id}"),
                      b.get(f"/v1/video/jobs/{job_id}/results"),
                      b.get(f"/v1/video/jobs/{job_id}/persons"),
                      b.post(f"/v1/video/jobs/{job_id}/cancel"),
                      b.delete(f"/v1/video/jobs/{job_id}")):
                error(r, 404, "job_not_found")
            assert a.get(f"/v1/video/jobs/{job_id}/results").status_code == 200
            settings = {"input_url": str(clip()), "collection": WITH_LIN, "max_fps": 4}
            r = a.post("/v1/streams", json={"name": "cam-case-a", "settings": settings})
            assert r.status_code == 201, r.text
            for r in (b.get("/v1/streams/cam-case-a"), b.get("/v1/streams/cam-case-a/events"),
                      b.post("/v1/streams/cam-case-a/start")):
                error(r, 404, "stream_processor_not_found")
            assert "cam-case-a" not in {p["name"] for p in b.get("/v1/streams").json()[
                "processors"]}
            assert a.post("/v1/streams/cam-case-a/start").status_code == 200
            ws_url = vserver.url.replace("http://", "ws://") + "/v1/streams/cam-case-a/ws"
            auth = {"Authorization": f"Bearer {keys['A']['key_id']}:{keys['A']['secret']}"}
            with connect(ws_url, open_timeout=10, additional_headers=auth) as ws, \
                    a.stream("GET", "/v1/streams/cam-case-a/events") as feed:
                assert json.loads(ws.recv(10))["type"] == "subscribed"
                events = sse_events(feed)
                assert next(events)[0] == "subscribed"
                for kind, _ in events:  # a live match, then the key is revoked
                    if kind == "face_match":
                        break
                revoked = admin.delete(f"/v1/keys/{keys['A']['key_id']}")
                assert revoked.status_code == 200, revoked.text
                rest = list(events)  # the feed ends at once
                while (msg := json.loads(ws.recv(30))).get("type") != "end":
                    assert msg["emitted_at"] <= revoked.json()["revoked_at"]
                assert "revoked" in msg["reason"]
                with pytest.raises(ConnectionClosed):
                    ws.recv(10)
            assert rest and rest[-1][0] == "end" and "revoked" in rest[-1][1]["reason"]
            revoked_at = revoked.json()["revoked_at"]
            assert all(d["emitted_at"] <= revoked_at for k, d in rest if k == "face_match")
            info = admin.get("/v1/streams/cam-case-a").json()
            assert info["status"] == "STOPPED" and "revoked" in info["status_message"]
            assert a.get("/v1/video/jobs").status_code == 401
            assert admin.delete("/v1/streams/cam-case-a").status_code == 204
        with vserver.native("auditor") as auditor:  # the read of case A's results
            r = auditor.get("/v1/audit", params={"operation": "video.results.read",
                                                 "case": "A"})
            assert r.status_code == 200, r.text
            reads = [e for e in r.json()["events"] if e["details"]["job_id"] == job_id]
            assert [e["actor"] for e in reads] == [keys["A"]["key_id"]]
