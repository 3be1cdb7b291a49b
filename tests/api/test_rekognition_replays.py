"""Repeated requests against a real server process with real boto3 (issue 22): identical calls
signed in the same second answered as on AWS, a polling loop, botocore's retry after a dropped
connection, ClientRequestToken for every operation that takes one, replays after a restart and
of feeds refused, video jobs of unreadable media FAILED, no server path in any error message,
the image formats of the Rekognition endpoint, and the smaller shape items (every answer walked
against botocore's model, :mod:`.shapes`)."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image as PILImage
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from facesearch.api.rekognition_faces import image_format

from ..media.video_helpers import wait_for
from .conftest import (
    S3_BUCKET,
    Key,
    Server,
    free_port,
    image_bytes,
    start_server,
    stop_server,
)
from .shapes import watch
from .test_hardening import rekognition_call, send, signed


def code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> datetime.datetime:
    """botocore signs every request with this one time (now, to the second): identical calls
    carry identical signatures, as two calls within one second do."""
    import botocore.auth

    when = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda **_: when)
    return when


def signatures(client: Any) -> list[str]:
    """The Authorization headers ``client`` sends, from now on (one per attempt)."""
    seen: list[str] = []
    client.meta.events.register(
        "before-send.rekognition.*",
        lambda request, **_: seen.append(request.headers["Authorization"].decode()
                                         if isinstance(request.headers["Authorization"], bytes)
                                         else request.headers["Authorization"]))
    return seen


def body(out: dict[str, Any]) -> dict[str, Any]:
    """An answer without its ResponseMetadata (request ids differ)."""
    return {k: v for k, v in out.items() if k != "ResponseMetadata"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- identical calls in one second -------------------------------------------------------------

def test_identical_create_collection_in_one_second(server: Server,
                                                   frozen_clock: datetime.datetime) -> None:
    admin = server.rekognition("admin")
    sent = signatures(admin)
    name = unique("rp-twice")
    assert admin.create_collection(CollectionId=name)["StatusCode"] == 200
    with pytest.raises(admin.exceptions.ResourceAlreadyExistsException):
        admin.create_collection(CollectionId=name)  # not a 403: AWS's answer to a repeat
    assert len(sent) == 2 and sent[0] == sent[1]  # the same signature twice
    # Identical reads and a second identical search are answered normally too.
    for _ in range(3):
        assert admin.describe_collection(CollectionId=name)["FaceCount"] == 0
    searcher = server.rekognition("searcher")
    probe = {"Bytes": image_bytes("obama.jpg")}
    first = searcher.search_faces_by_image(CollectionId=name, Image=probe)
    assert body(searcher.search_faces_by_image(CollectionId=name, Image=probe)) == body(first)
    assert admin.delete_collection(CollectionId=name)["StatusCode"] == 200


def test_identical_index_faces_indexes_once(server: Server,
                                            frozen_clock: datetime.datetime) -> None:
    """The same signed IndexFaces twice (a program's repeat in one second, or a replay) gets
    the first answer; the image is indexed once."""
    name = unique("rp-index")
    server.rekognition("admin").create_collection(CollectionId=name)
    indexer = server.rekognition("indexer")
    image = {"Bytes": image_bytes("obama.jpg")}
    a = indexer.index_faces(CollectionId=name, Image=image, ExternalImageId="once")
    b = indexer.index_faces(CollectionId=name, Image=image, ExternalImageId="once")
    assert [r["Face"]["FaceId"] for r in a["FaceRecords"]] == \
        [r["Face"]["FaceId"] for r in b["FaceRecords"]]
    assert len(indexer.list_faces(CollectionId=name)["Faces"]) == 1


def test_polling_loops(server: Server) -> None:
    """A program polling DescribeCollection and GetFaceDetection as fast as it can (many
    identical calls in each second) sees the state change and the job end."""
    name = unique("rp-poll")
    server.rekognition("admin").create_collection(CollectionId=name)
    auditor, indexer = server.rekognition("auditor"), server.rekognition("indexer")
    counts = [auditor.describe_collection(CollectionId=name)["FaceCount"] for _ in range(5)]
    indexer.index_faces(CollectionId=name, Image={"Bytes": image_bytes("obama.jpg")})
    counts += [auditor.describe_collection(CollectionId=name)["FaceCount"] for _ in range(5)]
    assert counts == [0] * 5 + [1] * 5
    searcher = server.rekognition("searcher")
    job = searcher.start_face_detection(
        Video={"S3Object": {"Bucket": S3_BUCKET, "Name": "videos/tiny.mp4"}})["JobId"]
    deadline = time.monotonic() + 300
    polls = 0
    while True:
        out = searcher.get_face_detection(JobId=job)
        polls += 1
        if out["JobStatus"] != "IN_PROGRESS" or time.monotonic() > deadline:
            break
    assert out["JobStatus"] == "SUCCEEDED", out
    assert out["Faces"] and polls >= 1


# -- a botocore retry after a dropped connection ---------------------------------------------

class DroppingProxy:
    """A TCP proxy to the server that drops the first ``drops`` answers: the server did the
    work, the client sees the connection closed before any answer (and botocore retries)."""

    def __init__(self, target: str, drops: int = 1) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.drops = drops
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        up = socket.create_connection(self.target)
        with self.lock:
            drop = self.dropped < self.drops
            self.dropped += drop
        threading.Thread(target=_pump, args=(conn, up), daemon=True).start()
        try:
            if drop:
                up.recv(1)  # the server has answered: it did the work
            else:
                _pump(up, conn)
        finally:
            for s in (conn, up):  # shut down first: a recv blocked in _pump would keep the
                try:              # socket open (no FIN), and botocore would wait 60 s for it
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass


@pytest.fixture
def proxy(server: Server) -> Iterator[DroppingProxy]:
    p = DroppingProxy(server.url)
    yield p
    p.close()


def client_via(proxy: DroppingProxy, server: Server, role: str) -> Any:
    import boto3
    from botocore.config import Config

    k = server.keys[role]
    return watch(boto3.client("rekognition", endpoint_url=proxy.url, region_name="eu-west-1",
                              aws_access_key_id=k.key_id, aws_secret_access_key=k.secret,
                              config=Config(retries={"max_attempts": 3, "mode": "standard"})))


def test_retry_after_a_dropped_connection_creates_one_user(server: Server,
                                                           proxy: DroppingProxy) -> None:
    """CreateUser's first answer is lost; botocore retries with the same ClientRequestToken
    (it fills one in) and gets the first answer, not ConflictException."""
    name = unique("rp-retry")
    server.rekognition("admin").create_collection(CollectionId=name)
    indexer = client_via(proxy, server, "indexer")
    sent = signatures(indexer)
    assert indexer.create_user(CollectionId=name, UserId="u1")["ResponseMetadata"][
        "HTTPStatusCode"] == 200
    assert proxy.dropped == 1 and len(sent) == 2  # it was retried once
    users = server.rekognition("indexer").list_users(CollectionId=name)["Users"]
    assert [u["UserId"] for u in users] == ["u1"]


def test_retry_signed_in_the_same_second_indexes_once(server: Server, proxy: DroppingProxy,
                                                      frozen_clock: datetime.datetime) -> None:
    """IndexFaces has no token: its retry in the same second (the same signature) gets the
    first answer instead of indexing the image again."""
    name = unique("rp-retry-index")
    server.rekognition("admin").create_collection(CollectionId=name)
    indexer = client_via(proxy, server, "indexer")
    sent = signatures(indexer)
    out = indexer.index_faces(CollectionId=name, Image={"Bytes": image_bytes("obama.jpg")})
    assert len(sent) == 2 and sent[0] == sent[1]
    assert len(out["FaceRecords"]) == 1
    faces = server.rekognition("indexer").list_faces(CollectionId=name)["Faces"]
    assert [f["FaceId"] for f in faces] == [out["FaceRecords"][0]["Face"]["FaceId"]]


# -- ClientRequestToken ------------------------------------------------------------------------

def test_client_request_tokens(server: Server) -> None:
    name = unique("rp-token")
    server.rekognition("admin").create_collection(CollectionId=name)
    indexer = server.rekognition("indexer")
    # CreateUser / DeleteUser: the same token answers the first answer.
    assert indexer.create_user(CollectionId=name, UserId="t1", ClientRequestToken="tok-1")
    assert indexer.create_user(CollectionId=name, UserId="t1", ClientRequestToken="tok-1")
    with pytest.raises(indexer.exceptions.ConflictException):  # another token: a new request
        indexer.create_user(CollectionId=name, UserId="t1", ClientRequestToken="tok-2")
    with pytest.raises(indexer.exceptions.IdempotentParameterMismatchException):
        indexer.create_user(CollectionId=name, UserId="t9", ClientRequestToken="tok-1")
    indexer.delete_user(CollectionId=name, UserId="t1", ClientRequestToken="del-1")
    indexer.delete_user(CollectionId=name, UserId="t1", ClientRequestToken="del-1")
    with pytest.raises(indexer.exceptions.ResourceNotFoundException):
        indexer.delete_user(CollectionId=name, UserId="t1", ClientRequestToken="del-2")
    # A failed request is not remembered: the same token runs again once it can succeed.
    with pytest.raises(indexer.exceptions.ResourceNotFoundException):
        indexer.create_user(CollectionId=name + "-later", UserId="t1",
                            ClientRequestToken="tok-3")
    server.rekognition("admin").create_collection(CollectionId=name + "-later")
    indexer.create_user(CollectionId=name + "-later", UserId="t1", ClientRequestToken="tok-3")
    # Start* jobs: the same token and parameters, the same JobId; other parameters refused.
    searcher = server.rekognition("searcher")
    video = {"S3Object": {"Bucket": S3_BUCKET, "Name": "videos/tiny.mp4"}}
    token = unique("job")
    first = searcher.start_face_search(CollectionId=name, Video=video, ClientRequestToken=token)
    again = searcher.start_face_search(CollectionId=name, Video=video, ClientRequestToken=token)
    assert first["JobId"] == again["JobId"]
    with pytest.raises(searcher.exceptions.IdempotentParameterMismatchException):
        searcher.start_face_search(CollectionId=name, Video=video, ClientRequestToken=token,
                                   FaceMatchThreshold=95)
    with pytest.raises(searcher.exceptions.IdempotentParameterMismatchException):
        searcher.start_face_search(CollectionId=name, Video=video, ClientRequestToken=token,
                                   JobTag="other")
    d1 = searcher.start_face_detection(Video=video, ClientRequestToken=token)["JobId"]
    assert d1 != first["JobId"]  # a token is per operation
    assert searcher.start_face_detection(Video=video, ClientRequestToken=token)["JobId"] == d1
    # Another key's same token is its own.
    with FaceSearchKeys(server) as other:
        mine = other.start_face_detection(Video=video, ClientRequestToken=token)["JobId"]
    assert mine != d1


class FaceSearchKeys:
    """A boto3 client of a second searcher key (made on the server's data directory)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> Any:
        from facesearch.service import FaceSearch

        with FaceSearch(self.server.settings()) as fs:
            new = fs.keys.create("searcher", label="second searcher")
        return self.server.client(new.info.key_id, new.secret)

    def __exit__(self, *_: object) -> None:
        return None


# -- replays across a restart, feeds --------------------------------------------------------------

@pytest.mark.slow
def test_replays_refused_after_a_restart(tmp_path: Path) -> None:
    """A CreateKey captured before a restart and replayed after it (inside the window) is
    refused; a captured IndexFaces replayed after it gets the first answer (no second copy);
    a ClientRequestToken's answer outlives the restart."""
    home = tmp_path / "home"
    srv = start_server(home, tmp_path / "server1.log")
    try:
        key_call = signed(srv, "admin", "POST", "/v1/keys",
                          body=json.dumps({"role": "admin", "label": "rp-minted"}).encode(),
                          headers={"Content-Type": "application/json"})
        assert send("POST", *key_call).status_code == 201
        srv.rekognition("admin").create_collection(CollectionId="rp-restart")
        import base64

        index_call = rekognition_call(srv, "indexer", "IndexFaces", {
            "CollectionId": "rp-restart",
            "Image": {"Bytes": base64.b64encode(image_bytes("obama.jpg")).decode()}})
        first = send("POST", *index_call)
        assert first.status_code == 200, first.text
        srv.rekognition("indexer").create_user(CollectionId="rp-restart", UserId="u",
                                               ClientRequestToken="before-restart")
    finally:
        stop_server(srv)
    keys, old_url = srv.keys, srv.url
    srv = start_server(home, tmp_path / "server2.log")

    def to_new(call: tuple[str, dict[str, str], bytes]) -> tuple[str, dict[str, str], bytes]:
        """The captured request as sent again to the restarted server (on another port: the
        captured, signed Host header kept)."""
        url, hdrs, data = call
        return (url.replace(old_url, srv.url),
                {**hdrs, "Host": old_url.removeprefix("http://")}, data)

    key_call, index_call = to_new(key_call), to_new(index_call)
    try:
        again = send("POST", *key_call)
        assert again.status_code == 401 and again.json()["code"] == "replayed_request"
        with srv.native("admin") as admin:
            minted = [k for k in admin.get("/v1/keys").json() if k["label"] == "rp-minted"]
        assert len(minted) == 1
        replayed = send("POST", *index_call)
        assert replayed.status_code == 200 and replayed.json() == first.json()
        old_indexer = srv.client(keys["indexer"].key_id, keys["indexer"].secret)
        assert len(old_indexer.list_faces(CollectionId="rp-restart")["Faces"]) == 1
        old_indexer.create_user(CollectionId="rp-restart", UserId="u",
                                ClientRequestToken="before-restart")  # not ConflictException
    finally:
        stop_server(srv)


def test_replayed_feed_signatures_are_refused(server: Server) -> None:
    """A feed counts as a change: its SigV4 signature is accepted once (SSE, live view and
    WebSocket), so a captured feed request cannot open another feed."""
    for path in ("/v1/streams/rp-nowhere/events", "/v1/streams/rp-nowhere/live"):
        url, hdrs, body = signed(server, "searcher", "GET", path)
        assert send("GET", url, hdrs, body).status_code == 404
        r = send("GET", url, hdrs, body)
        assert r.status_code == 401 and r.json()["code"] == "replayed_request", r.text
    url, hdrs, _ = signed(server, "searcher", "GET", "/v1/streams/rp-nowhere/ws")
    ws_url = url.replace("http://", "ws://")
    auth = {"Authorization": hdrs["Authorization"], "X-Amz-Date": hdrs["X-Amz-Date"]}
    answers = []
    for _ in range(2):
        with connect(ws_url, open_timeout=10, additional_headers=auth) as ws:
            answers.append(json.loads(ws.recv(10))["code"])
            with pytest.raises(ConnectionClosed):
                ws.recv(10)
    assert answers == ["stream_processor_not_found", "replayed_request"]


def test_replayed_crop_request_is_refused(server: Server) -> None:
    """A crop request is audited under its key: a replay is refused, not audited again."""
    url, hdrs, body = signed(server, "searcher", "GET", "/v1/collections/rp-none/faces/x/crop")
    first = send("GET", url, hdrs, body)
    assert first.status_code != 401, first.text
    r = send("GET", url, hdrs, body)
    assert r.status_code == 401 and r.json()["code"] == "replayed_request", r.text


# -- unreadable videos, server paths -----------------------------------------------------------

def test_unreadable_video_is_a_failed_job(server: Server) -> None:
    searcher = server.rekognition("searcher")
    job = searcher.start_face_detection(
        Video={"S3Object": {"Bucket": S3_BUCKET, "Name": "notes.txt"}})["JobId"]
    out = wait_for(lambda: (r := searcher.get_face_detection(JobId=job))["JobStatus"]
                   != "IN_PROGRESS" and r, 60, "the job to end")
    assert out["JobStatus"] == "FAILED" and out["StatusMessage"] == "Unsupported codec/format."
    assert out["Faces"] == []


def test_no_error_message_names_a_server_path(server: Server) -> None:
    """The error messages of failing operations on both endpoints (and a failed job's status
    message) never name the data directory."""
    home = server.home
    private = {str(home), str(home.resolve())}
    messages: list[str] = []
    searcher, indexer = server.rekognition("searcher"), server.rekognition("indexer")
    junk = {"Bytes": b"\xff\xd8\xff" + b"junk" * 100}
    failing = [
        lambda: searcher.detect_faces(Image=junk),
        lambda: indexer.index_faces(CollectionId="rp-missing", Image=junk),
        lambda: searcher.search_faces(CollectionId="rp-missing", FaceId=str(uuid.uuid4())),
        lambda: searcher.get_face_search(JobId="nope"),
        lambda: searcher.detect_faces(Image={"S3Object": {"Bucket": S3_BUCKET,
                                                          "Name": "absent.jpg"}}),
        lambda: searcher.detect_faces(Image={"S3Object": {"Bucket": S3_BUCKET,
                                                          "Name": "notes.txt"}}),
        lambda: searcher.start_face_detection(Video={"S3Object": {"Bucket": S3_BUCKET,
                                                                  "Name": "absent.mp4"}}),
    ]
    for call in failing:
        with pytest.raises(ClientError) as err:
            call()
        messages.append(err.value.response["Error"]["Message"])
    job = searcher.start_face_detection(
        Video={"S3Object": {"Bucket": S3_BUCKET, "Name": "notes.txt"}})["JobId"]
    done = wait_for(lambda: (r := searcher.get_face_detection(JobId=job))["JobStatus"]
                    != "IN_PROGRESS" and r, 60, "the job to end")
    messages.append(done["StatusMessage"])
    with server.native("searcher") as c:
        for r in (c.post("/v1/video/detect",
                         files={"video": ("clip.mp4", b"not a video at all" * 50)}),
                  c.post("/v1/video/detect", json={"path": str(home / "facesearch.db")}),
                  c.post("/v1/video/detect", json={"path": str(home / "uploads" / "x.mp4")}),
                  c.post("/v1/collections/rp-missing/search",
                         files={"image": ("x.jpg", b"\xff\xd8junk")})):
            assert r.status_code >= 400, r.text
            messages.append(r.json()["message"])
    assert len(messages) == len(failing) + 5
    # Every operation of the Rekognition endpoint, failing: an empty request, and one naming
    # what does not exist, with a key that may call everything.
    from facesearch.api.rekognition import HANDLERS
    from facesearch.service import FaceSearch

    with FaceSearch(server.settings()) as fs:
        every = fs.keys.create(["admin", "indexer", "searcher", "auditor"], label="rp-every")
    server.keys["rp-every"] = Key(every.info.key_id, every.secret, "admin")
    missing = {"CollectionId": "rp-missing", "FaceId": str(uuid.uuid4()), "UserId": "nobody",
               "FaceIds": [str(uuid.uuid4())], "JobId": "no-such-job", "Name": "rp-missing",
               "ResourceArn": "arn:aws:rekognition:us-east-1:000000000000:collection/rp-m",
               "Image": {"S3Object": {"Bucket": S3_BUCKET, "Name": "absent.jpg"}},
               "Video": {"S3Object": {"Bucket": S3_BUCKET, "Name": "absent.mp4"}}}
    try:
        for op in HANDLERS:
            for params in ({}, missing):
                r = send("POST", *rekognition_call(server, "rp-every", op.value, params,
                                                   nonce=uuid.uuid4().hex))
                if r.status_code >= 400:
                    messages.append(r.json()["message"])
    finally:
        del server.keys["rp-every"]
    assert len(messages) > len(HANDLERS) + len(failing)
    leaked = [m for m in messages if any(p in m for p in private)]
    assert leaked == []


# -- image formats ---------------------------------------------------------------------------

def _encoded(fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    PILImage.open(io.BytesIO(image_bytes("obama.jpg"))).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def test_rekognition_endpoint_takes_jpeg_and_png(server: Server) -> None:
    searcher = server.rekognition("searcher")
    assert searcher.detect_faces(Image={"Bytes": _encoded("PNG")})["FaceDetails"]
    for fmt in ("WEBP", "GIF", "BMP", "TIFF"):
        data = _encoded(fmt)
        assert image_format(data) == fmt.lower()
        with pytest.raises(searcher.exceptions.InvalidImageFormatException):
            searcher.detect_faces(Image={"Bytes": data})
    # The native API reads every format.
    with server.native("searcher") as c:
        r = c.post("/v1/detect", files={"image": ("x.webp", _encoded("WEBP"))})
        assert r.status_code == 200, r.text


def test_more_formats_by_setting() -> None:
    from facesearch.config import ApiSettings

    assert ApiSettings().rekognition_image_formats == ["jpeg", "png"]
    s = ApiSettings(rekognition_image_formats=["jpeg", "png", "webp"])
    assert "webp" in s.rekognition_image_formats
    with pytest.raises(ValueError):
        ApiSettings(rekognition_image_formats=["exe"])


# -- shapes and error classes ------------------------------------------------------------------

def test_smaller_shape_items(server: Server) -> None:
    name = unique("rp-shapes")
    server.rekognition("admin").create_collection(CollectionId=name)
    indexer = server.rekognition("indexer")
    # DeleteFaces that deletes nothing: no DeletedFaces member (the walker holds list sizes).
    out = indexer.delete_faces(CollectionId=name, FaceIds=[str(uuid.uuid4())])
    assert "DeletedFaces" not in out
    assert out["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["FACE_NOT_FOUND"]
    searcher = server.rekognition("searcher")
    # ListStreamProcessors: the model sets no maximum; a large MaxResults is clamped.
    assert "StreamProcessors" in searcher.list_stream_processors(MaxResults=5000)
    # CreateStreamProcessor with an unknown collection: an error class its model lists.
    with pytest.raises(searcher.exceptions.InvalidParameterException):
        searcher.create_stream_processor(
            Input={"KinesisVideoStream": {"Arn": "arn:aws:kinesisvideo:eu-west-1:"
                                                 "000000000000:stream/no-camera/1"}},
            Output={"KinesisDataStream": {"Arn": "arn:aws:kinesis:eu-west-1:000000000000:"
                                                 "stream/out"}},
            Name=unique("rp-proc"), RoleArn="arn:aws:iam::000000000000:role/r",
            Settings={"FaceSearch": {"CollectionId": "rp-no-such-collection"}})
    # A member of the wrong type: SerializationException (botocore's own checks off).
    import boto3
    from botocore.config import Config

    k = server.keys["admin"]
    loose = watch(boto3.client("rekognition", endpoint_url=server.url, region_name="eu-west-1",
                               aws_access_key_id=k.key_id, aws_secret_access_key=k.secret,
                               config=Config(parameter_validation=False,
                                             retries={"max_attempts": 1})))
    for call in (lambda: loose.list_collections(MaxResults="many"),
                 lambda: loose.list_faces(CollectionId=name, MaxResults="10"),
                 lambda: loose.describe_collection(CollectionId=["a", "b"])):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err.value) == "SerializationException", err.value.response
    with pytest.raises(ClientError) as err:  # the right type, outside its bounds
        loose.list_collections(MaxResults=0)
    assert code(err.value) == "InvalidParameterException"


def test_tags_on_create_need_tag_resources_right(server: Server) -> None:
    """A searcher creates stream processors but may not tag (TagResource is admin-only): Tags
    on CreateStreamProcessor are refused; an admin's Tags on CreateCollection are fine."""
    searcher = server.rekognition("searcher")
    with pytest.raises(searcher.exceptions.AccessDeniedException, match="TagResource"):
        searcher.create_stream_processor(
            Input={"KinesisVideoStream": {"Arn": "arn:aws:kinesisvideo:eu-west-1:"
                                                 "000000000000:stream/no-camera/1"}},
            Output={"KinesisDataStream": {"Arn": "arn:aws:kinesis:eu-west-1:000000000000:"
                                                 "stream/out"}},
            Name=unique("rp-tagged"), RoleArn="arn:aws:iam::000000000000:role/r",
            Settings={"FaceSearch": {"CollectionId": "anything"}}, Tags={"owner": "me"})
    name = unique("rp-tagged")
    server.rekognition("admin").create_collection(CollectionId=name, Tags={"owner": "unit 7"})
    app = server.rekognition("admin")
    arn = app.describe_collection(CollectionId=name)["CollectionARN"]
    assert app.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"owner": "unit 7"}


def test_error_codes_are_listed_by_the_model(server: Server) -> None:
    """The walker refuses an error class the operation's model does not list; a few of the
    answers that used to be outside it."""
    from botocore.model import ServiceModel

    from . import shapes

    import botocore.loaders

    model = ServiceModel(botocore.loaders.Loader().load_service_model("rekognition",
                                                                      "service-2"))
    body = json.dumps({"__type": "ResourceNotFoundException", "message": "x"}).encode()
    with pytest.raises(AssertionError, match="does not list"):
        shapes.check(model.operation_model("CreateStreamProcessor"), 400, body)
    shapes.check(model.operation_model("DescribeCollection"), 400, body)
    with pytest.raises(AssertionError, match="size"):
        shapes.check(model.operation_model("DeleteFaces"), 200,
                     json.dumps({"DeletedFaces": []}).encode())
    assert httpx.get(server.url + "/healthz").status_code == 200
