"""Regression tests for the holes found by attacking a running server (issue 11): unsigned
operation and purpose/case headers, replayed signatures, bodies read before authentication,
oversized chunked bodies, the CDN docs page, deep JSON, racing identical IndexFaces, S3 object
names, and the rate limit taken before any image work. Each runs against the real server
process (conftest), with real SigV4 signatures made by botocore."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from facesearch.api.errors import ReplayedRequestError
from facesearch.api.replay import ReplayCache
from facesearch.config import Settings
from facesearch.errors import ThrottledError
from facesearch.service import FaceSearch
from facesearch.types import Caller

from .conftest import Server, blank_png, image_bytes

TARGET = "RekognitionService."


def signed(server: Server, role: str, method: str, path: str, *, body: bytes = b"",
           service: str = "facesearch", headers: dict[str, str] | None = None,
           unsigned: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:
    """A request signed by botocore with ``role``'s key (``headers`` signed), then with
    ``unsigned`` headers added after signing: (url, headers, body) to send."""
    k = server.keys[role]
    url = server.url + path
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(k.key_id, k.secret), service, "eu-west-1").add_auth(req)
    out = {name: str(value) for name, value in req.headers.items()}
    out.update(unsigned or {})
    return url, out, body


def send(method: str, url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.request(method, url, headers=headers, content=body, timeout=120)


def rekognition_call(server: Server, role: str, op: str, params: dict[str, Any], *,
                     sign_target: bool = True, target: str | None = None, nonce: str = "1"
                     ) -> tuple[str, dict[str, str], bytes]:
    """A Rekognition call; ``nonce`` (a signed ``amz-sdk-invocation-id``, as boto3 sends)
    tells apart identical requests signed in the same second."""
    body = json.dumps(params).encode()
    hdrs = {"Content-Type": "application/x-amz-json-1.1", "amz-sdk-invocation-id": nonce}
    tgt = {"X-Amz-Target": TARGET + op}
    return signed(server, role, "POST", "/", body=body, service="rekognition",
                  headers={**hdrs, **(tgt if sign_target else {})},
                  unsigned=None if sign_target else {"X-Amz-Target": TARGET + (target or op)})


# -- item 5: X-Amz-Target and X-Facesearch-* must be signed --------------------------------

def test_unsigned_target_cannot_turn_describe_into_delete(server: Server) -> None:
    name = "h-unsigned-target"
    admin = server.rekognition("admin")
    admin.create_collection(CollectionId=name)
    # Signed as DescribeCollection without the target among the signed headers, sent as
    # DeleteCollection (the captured-and-rewritten request of the attack).
    url, hdrs, body = rekognition_call(server, "admin", "DescribeCollection",
                                       {"CollectionId": name}, sign_target=False,
                                       target="DeleteCollection")
    r = send("POST", url, hdrs, body)
    assert r.status_code == 403, r.text
    assert r.json()["__type"] == "IncompleteSignatureException"
    assert "x-amz-target" in r.json()["message"]
    assert admin.describe_collection(CollectionId=name)["FaceCount"] == 0  # still there
    # The request with the target signed works (botocore signs it).
    url, hdrs, body = rekognition_call(server, "admin", "DescribeCollection",
                                       {"CollectionId": name}, nonce="2")
    assert send("POST", url, hdrs, body).status_code == 200


def test_unsigned_case_and_purpose_headers_are_refused(server: Server) -> None:
    for extra in ({"X-Facesearch-Case": "C-1"}, {"X-Facesearch-Purpose": "burglary"}):
        url, hdrs, body = signed(server, "searcher", "GET", "/v1/whoami", unsigned=extra)
        r = send("GET", url, hdrs, body)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "incomplete_signature"
        assert next(iter(extra)).lower() in r.json()["message"]
        url, hdrs, body = signed(server, "searcher", "GET", "/v1/whoami",
                                 headers={**extra, "amz-sdk-invocation-id": "signed"})
        assert send("GET", url, hdrs, body).status_code == 200


# -- item 6: replays within the clock-skew window -------------------------------------------

def test_replayed_signatures_are_refused(server: Server) -> None:
    url, hdrs, body = signed(server, "admin", "POST", "/v1/keys",
                             body=json.dumps({"role": "admin", "label": "h-replay"}).encode(),
                             headers={"Content-Type": "application/json"})
    first = send("POST", url, hdrs, body)
    assert first.status_code == 201, first.text
    again = send("POST", url, hdrs, body)
    assert again.status_code == 401, again.text
    assert again.json()["code"] == "replayed_request"
    with server.native("admin") as admin:
        minted = [k for k in admin.get("/v1/keys").json() if k["label"] == "h-replay"]
    assert len(minted) == 1
    # The Rekognition endpoint answers an identical call as AWS does (issue 22): a repeated
    # CreateCollection runs again (ResourceAlreadyExistsException), never a 403.
    url, hdrs, body = rekognition_call(server, "admin", "CreateCollection",
                                       {"CollectionId": "h-replayed"})
    assert send("POST", url, hdrs, body).status_code == 200
    r = send("POST", url, hdrs, body)
    assert r.status_code == 400 and r.json()["__type"] == "ResourceAlreadyExistsException", r.text
    # Reads change nothing: the same signed read is answered again (SDK polls).
    url, hdrs, body = rekognition_call(server, "admin", "ListCollections", {})
    assert send("POST", url, hdrs, body).status_code == 200
    assert send("POST", url, hdrs, body).status_code == 200


def test_replay_cache_forgets_after_the_window() -> None:
    cache = ReplayCache(max_entries=2)
    cache.admit("a", expires_at=100.0, now=0.0)
    with pytest.raises(ReplayedRequestError):
        cache.admit("a", expires_at=100.0, now=50.0)
    cache.admit("b", expires_at=200.0, now=50.0)
    with pytest.raises(ThrottledError):  # full of live signatures: refuse, never forget one
        cache.admit("c", expires_at=200.0, now=60.0)
    cache.admit("c", expires_at=300.0, now=100.0)  # "a" expired
    assert len(cache) == 2
    cache.forget("c")  # a throttled request may be retried as signed
    cache.admit("c", expires_at=300.0, now=150.0)


# -- item 12: authentication before the body; 413 for chunked bodies -----------------------

def _headers_only(server: Server, head: str) -> bytes:
    """Send a request's head (announcing a body) but no body; return the answer."""
    u = urlsplit(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("path", ["/", "/v1/collections", "/v1/detect"])
def test_unauthenticated_requests_are_refused_before_their_body(server: Server,
                                                                path: str) -> None:
    host = urlsplit(server.url).netloc
    ans = _headers_only(server, f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                                "Content-Type: application/json\r\nContent-Length: 1000000\r\n"
                                "X-Amz-Target: RekognitionService.ListCollections\r\n\r\n")
    status = ans.split(b"\r\n", 1)[0]
    assert status.split()[1] in (b"401", b"403"), ans[:300]
    ans = _headers_only(server, f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                                "Authorization: Bearer AKNOTAKEY:nope\r\n"
                                "Content-Type: application/json\r\nContent-Length: 1000000\r\n"
                                "\r\n")
    assert ans.split(b"\r\n", 1)[0].split()[1] in (b"401", b"403"), ans[:300]


def test_oversized_chunked_body_gets_413(small_server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    with small_server.native("admin") as admin:  # 64 KiB limit, no Content-Length
        r = admin.post("/v1/collections", content=chunks(),
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "request_too_large"
        r = admin.post("/v1/detect", content=chunks(),
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text


# -- item 13: /docs without a CDN -----------------------------------------------------------

def test_docs_load_nothing_from_elsewhere(server: Server) -> None:
    r = httpx.get(server.url + "/docs", timeout=30)
    assert r.status_code == 200
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "script-src 'none'" in r.headers["content-security-policy"]
    text = r.text.lower()
    assert "<script" not in text and "cdn" not in text and "http://" not in text
    assert "https://" not in text
    assert "/v1/collections/{collection}/search" in r.text  # it documents the API
    assert httpx.get(server.url + "/redoc", timeout=30).status_code == 404


# -- low: deep JSON, racing identical IndexFaces, S3 names --------------------------------

def test_deeply_nested_json_is_a_400(server: Server) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    url, hdrs, body = signed(server, "searcher", "POST", "/", body=deep, service="rekognition",
                             headers={"Content-Type": "application/x-amz-json-1.1",
                                      "X-Amz-Target": TARGET + "DetectFaces"})
    r = send("POST", url, hdrs, body)
    assert r.status_code == 400, r.text
    assert r.json()["__type"] == "SerializationException"
    with server.native("searcher") as s:
        r = s.post("/v1/detect", content=deep, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "serialization_error"


def test_identical_concurrent_index_faces(server: Server) -> None:
    name = "h-race"
    with server.native("admin") as admin:
        assert admin.post("/v1/collections", json={"name": name}).status_code == 201
    photo = image_bytes("obama.jpg")
    pairs = 4
    results: list[httpx.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2 * pairs)

    def index(i: int) -> None:
        data = photo + bytes([i])  # the same content within a pair, another for each pair
        with server.native("indexer") as idx:
            barrier.wait()
            r = idx.post(f"/v1/collections/{name}/faces", json={
                "image": base64.b64encode(data).decode()})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=index, args=(i // 2,)) for i in range(2 * pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * (2 * pairs), [r.text for r in results]
    stored = [r.json() for r in results if not r.json()["duplicate"]]
    dupes = [r.json() for r in results if r.json()["duplicate"]]
    assert len(stored) == pairs and all(len(s["indexed"]) == 1 for s in stored)
    assert all(d["indexed"] == [] and d["unindexed"] == [] for d in dupes)
    with server.native("admin") as admin:
        assert admin.get(f"/v1/collections/{name}").json()["faces"] == pairs


@pytest.mark.parametrize("bucket,name", [("probes", "../../other-bucket/x"),
                                         ("probes", "a/../../obama2.jpg"),
                                         ("probes", "/obama2.jpg"),
                                         ("../probes", "obama2.jpg")])
def test_s3_object_names_are_not_paths(server: Server, bucket: str, name: str) -> None:
    from botocore.exceptions import ClientError

    client = server.rekognition("searcher")
    with pytest.raises(ClientError) as info:
        client.detect_faces(Image={"S3Object": {"Bucket": bucket, "Name": name}})
    err = info.value.response["Error"]
    assert err["Code"] == "InvalidS3ObjectException"
    assert "invalid S3" in err["Message"]


def test_plain_s3_object_names_still_work(server: Server) -> None:
    client = server.rekognition("searcher")
    assert client.detect_faces(Image={"S3Object": {"Bucket": "probes",
                                                   "Name": "obama2.jpg"}})["FaceDetails"]


# -- low: the rate limit is taken before any image work --------------------------------------

def test_rate_limit_is_checked_before_the_probe_is_analysed(tmp_path: Path) -> None:
    caller = Caller(actor="AKTESTRATE", role="searcher")
    with FaceSearch(Settings(home=tmp_path, searches_per_minute=1)) as fs:
        fs.collections.create("rl")
        limiter = fs.search.limiter
        assert limiter is not None
        while True:  # spend the caller's burst
            try:
                limiter.acquire(caller.actor)
            except ThrottledError:
                break
        # Out of searches: refused before decoding (garbage bytes) or detecting (no face).
        for probe in (b"not an image", blank_png()):
            with pytest.raises(ThrottledError):
                fs.search.by_image("rl", probe, caller=caller)
            with pytest.raises(ThrottledError):
                fs.users.search_by_image("rl", probe, caller=caller)
