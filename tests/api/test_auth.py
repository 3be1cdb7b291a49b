"""SigV4 verification against requests signed by botocore's own signer; bearer keys; the role
table."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from facesearch.api.auth import (
    PERMISSIONS,
    Operation,
    SignedRequest,
    authenticate,
    authorize,
    canonical_query,
    preauthenticate,
    sigv4_signature,
)
from facesearch.api.errors import (
    IncompleteSignatureError,
    MissingAuthError,
    ReplayedRequestError,
    SignatureExpiredError,
    SignatureMismatchError,
    UnknownKeyError,
)
from facesearch.api.replay import ReplayCache, SharedReplays
from facesearch.config import Settings
from facesearch.errors import AccessDeniedError
from facesearch.governance.keys import AccessKeys, NewKey, Role
from facesearch.service import FaceSearch

HOST = "127.0.0.1:8123"


@pytest.fixture
def keys(home: Path) -> Iterator[AccessKeys]:
    fs = FaceSearch(Settings(home=home))
    yield fs.keys
    fs.shutdown()


def sign(key: NewKey, method: str, path: str, *, params: dict[str, str] | None = None,
         body: bytes = b"", service: str = "rekognition", headers: dict[str, str] | None = None,
         when: datetime.datetime | None = None,
         monkeypatch: pytest.MonkeyPatch | None = None) -> SignedRequest:
    """A request signed by botocore, as the server would receive it."""
    req = AWSRequest(method=method, url=f"http://{HOST}{path}", params=params or {}, data=body,
                     headers={"Content-Type": "application/x-amz-json-1.1", **(headers or {})})
    if when is not None and monkeypatch is not None:
        import botocore.auth

        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda **kw: when)
    SigV4Auth(Credentials(key.info.key_id, key.secret), service, "eu-west-1").add_auth(req)
    prepared = req.prepare()
    raw_path, _, query = prepared.url.split(HOST, 1)[1].partition("?")
    hdrs = [(k.lower(), v) for k, v in prepared.headers.items()] + [("host", HOST)]
    return SignedRequest(method, raw_path, query, hdrs, body)


def check(req: SignedRequest, keys: AccessKeys, service: str = "rekognition",
          now: float | None = None) -> str:
    return authenticate(req, keys, service=service, max_skew_s=300, allow_bearer=True,
                        now=now).key_id


def test_accepts_botocore_signatures(keys: AccessKeys) -> None:
    k = keys.create("searcher")
    body = b'{"CollectionId": "a"}'
    assert check(sign(k, "POST", "/", body=body), keys) == k.info.key_id
    odd = sign(k, "GET", "/v1/collections/a.b-c_d/faces", service="facesearch",
               params={"max_results": "5", "next_token": "ab/c+d=", "user_id": "x y:z"})
    assert check(odd, keys, "facesearch") == k.info.key_id


def test_refuses_tampering(keys: AccessKeys) -> None:
    k = keys.create("searcher")
    req = sign(k, "POST", "/", body=b'{"a": 1}')
    with pytest.raises(SignatureMismatchError):
        check(SignedRequest(req.method, req.path, req.query, req.headers, b'{"a": 2}'), keys)
    with pytest.raises(SignatureMismatchError):
        check(SignedRequest("PUT", req.path, req.query, req.headers, req.body), keys)
    signed = sign(k, "POST", "/", headers={"X-Amz-Target": "RekognitionService.DetectFaces"})
    swapped = [(n, "RekognitionService.DeleteCollection" if n == "x-amz-target" else v)
               for n, v in signed.headers]
    with pytest.raises(SignatureMismatchError):
        check(SignedRequest("POST", "/", "", swapped, b""), keys)
    with pytest.raises(SignatureMismatchError):  # scoped to another service
        check(req, keys, "facesearch")
    forged = NewKey(k.info, "x" * 40)
    with pytest.raises(SignatureMismatchError):
        check(sign(forged, "POST", "/"), keys)


def test_refuses_unknown_revoked_and_missing(keys: AccessKeys) -> None:
    k = keys.create("searcher")
    req = sign(k, "POST", "/")
    keys.revoke(k.info.key_id)
    with pytest.raises(UnknownKeyError):
        check(req, keys)
    with pytest.raises(MissingAuthError):
        check(SignedRequest("POST", "/", "", [("host", HOST)], b""), keys)
    broken = [(n, "AWS4-HMAC-SHA256 Credential=abc" if n == "authorization" else v)
              for n, v in req.headers]
    with pytest.raises(IncompleteSignatureError):
        check(SignedRequest("POST", "/", "", broken, b""), keys)


def test_target_and_facesearch_headers_must_be_signed(keys: AccessKeys) -> None:
    k = keys.create("admin")
    for name, value in (("x-amz-target", "RekognitionService.DeleteCollection"),
                        ("x-facesearch-case", "C-9"), ("x-facesearch-purpose", "other")):
        req = sign(k, "POST", "/")  # signed without it, the header added after
        added = SignedRequest("POST", "/", "", [*req.headers, (name, value)], b"")
        with pytest.raises(IncompleteSignatureError, match=name):
            check(added, keys)
        with pytest.raises(IncompleteSignatureError, match=name):  # before the body, too
            preauthenticate(added, keys, service="rekognition", max_skew_s=300,
                            allow_bearer=False)
        ok = sign(k, "POST", "/", headers={name: value})
        assert check(ok, keys) == k.info.key_id


def test_a_signature_is_accepted_once(keys: AccessKeys) -> None:
    k = keys.create("admin")
    req = sign(k, "POST", "/", body=b'{"a": 1}')
    seen = ReplayCache()
    assert authenticate(req, keys, service="rekognition", max_skew_s=300, allow_bearer=False,
                        replays=seen).key_id == k.info.key_id
    with pytest.raises(ReplayedRequestError):
        authenticate(req, keys, service="rekognition", max_skew_s=300, allow_bearer=False,
                     replays=seen)
    # A wrong signature is not remembered (it cannot lock out the real one).
    fresh = sign(k, "POST", "/", body=b'{"a": 2}')
    forged = SignedRequest("POST", "/", "", fresh.headers, b'{"a": 3}')
    with pytest.raises(SignatureMismatchError):
        authenticate(forged, keys, service="rekognition", max_skew_s=300, allow_bearer=False,
                     replays=seen)
    assert authenticate(fresh, keys, service="rekognition", max_skew_s=300,
                        allow_bearer=False, replays=seen).key_id == k.info.key_id


def test_clock_skew(keys: AccessKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    k = keys.create("searcher")
    t0 = datetime.datetime(2030, 1, 2, 3, 4, 5)
    now = t0.replace(tzinfo=datetime.UTC).timestamp()
    req = sign(k, "POST", "/", when=t0, monkeypatch=monkeypatch)
    assert check(req, keys, now=now + 299) == k.info.key_id
    assert check(req, keys, now=now - 299) == k.info.key_id
    with pytest.raises(SignatureExpiredError, match="Signature expired"):
        check(req, keys, now=now + 301)
    with pytest.raises(SignatureExpiredError, match="not yet current"):
        check(req, keys, now=now - 301)


def test_bearer(keys: AccessKeys) -> None:
    k = keys.create("auditor")
    ok = SignedRequest("GET", "/v1/whoami", "",
                       [("authorization", f"Bearer {k.info.key_id}:{k.secret}")], b"")
    assert check(ok, keys, "facesearch") == k.info.key_id
    bad = SignedRequest("GET", "/v1/whoami", "",
                        [("authorization", f"Bearer {k.info.key_id}:nope")], b"")
    with pytest.raises(SignatureMismatchError):
        check(bad, keys, "facesearch")
    with pytest.raises(IncompleteSignatureError):  # the Rekognition endpoint takes SigV4 only
        authenticate(ok, keys, service="rekognition", max_skew_s=300, allow_bearer=False)


def test_role_table(keys: AccessKeys) -> None:
    assert set(PERMISSIONS) == set(Operation)
    admin = keys.create(Role.ADMIN).info
    searcher = keys.create(Role.SEARCHER).info
    authorize(admin, Operation.CREATE_COLLECTION)
    authorize(searcher, Operation.SEARCH_FACES_BY_IMAGE)
    with pytest.raises(AccessDeniedError):
        authorize(searcher, Operation.CREATE_COLLECTION)
    with pytest.raises(AccessDeniedError):
        authorize(admin, Operation.SEARCH_FACES_BY_IMAGE)
    # A key with several roles may call what any of them may, and nothing more.
    app = keys.create([Role.ADMIN, Role.INDEXER, Role.SEARCHER]).info
    for op in (Operation.CREATE_COLLECTION, Operation.INDEX_FACES,
               Operation.SEARCH_FACES_BY_IMAGE):
        authorize(app, op)
    with pytest.raises(AccessDeniedError, match=r"role admin,indexer,searcher"):
        authorize(app, Operation.LIST_AUDIT_EVENTS)
    manager = keys.create([Role.ADMIN, Role.INDEXER]).info  # an admin who cannot search
    authorize(manager, Operation.INDEX_FACES)
    for op in (Operation.SEARCH_FACES, Operation.LIST_AUDIT_EVENTS):
        with pytest.raises(AccessDeniedError):
            authorize(manager, op)


def test_canonical_query_sorts_and_encodes() -> None:
    assert canonical_query("b=2&a=x%20y&a=1") == "a=1&a=x%20y&b=2"
    assert canonical_query("a=x+y%2Bz") == "a=x%20y%2Bz"
    assert canonical_query("") == ""


@pytest.mark.databases
def test_a_replay_to_another_node_of_the_database_is_refused(
        settings: Callable[..., Settings]) -> None:
    """Nodes sharing a database share the signatures they accepted (PostgreSQL deployments
    use :class:`SharedReplays`), so a captured request replayed to another node fails too."""
    a, b = FaceSearch(settings()), FaceSearch(settings())
    try:
        k = a.keys.create("admin")
        req = sign(k, "POST", "/", body=b'{"a": 1}')
        node_a, node_b = SharedReplays(a.store), SharedReplays(b.store)
        assert authenticate(req, a.keys, service="rekognition", max_skew_s=300,
                            allow_bearer=False, replays=node_a).key_id == k.info.key_id
        with pytest.raises(ReplayedRequestError):
            authenticate(req, b.keys, service="rekognition", max_skew_s=300,
                         allow_bearer=False, replays=node_b)
        # One refused before it did anything (throttled) is forgotten, so it may be retried.
        node_a.forget(sigv4_signature(dict(req.headers)["authorization"]) or "")
        assert authenticate(req, b.keys, service="rekognition", max_skew_s=300,
                            allow_bearer=False, replays=node_b).key_id == k.info.key_id
        # Expired signatures are forgotten (by then their date is refused anyway), and purged.
        node_a.admit("expiring", expires_at=100.0, now=50.0)
        with pytest.raises(ReplayedRequestError):
            node_b.admit("expiring", expires_at=100.0, now=60.0)
        node_b.admit("expiring", expires_at=500.0, now=100.0)
        assert b.store.requests.purge_signatures(now=499.0) == 0
        # the request's, 'expiring'
        assert b.store.requests.purge_signatures(now=time.time() + 3600) == 2
    finally:
        a.shutdown()
        b.shutdown()


def test_repeat_rules() -> None:
    """What a repeated signature gets (facesearch.api.replay): every operation has a rule on
    each endpoint; nothing that changes keys or policy, erases, indexes or opens a feed runs
    twice."""
    from facesearch.api.rekognition import HANDLERS
    from facesearch.api.replay import Repeat, repeat_rule

    o = Operation
    for op in Operation:
        native = repeat_rule(op, rekognition=False)
        assert native in (Repeat.RUN, Repeat.ONCE)
        assert repeat_rule(op, rekognition=True) in (Repeat.RUN, Repeat.FIRST_ANSWER)
    for op in (o.CREATE_KEY, o.REVOKE_KEY, o.SET_POLICY, o.ERASE_FACES, o.INDEX_FACES,
               o.GET_STREAM_PROCESSOR_EVENTS, o.GET_STREAM_LIVE_VIEW, o.GET_FACE_CROPS,
               o.TAG_RESOURCE, o.REVIEW_CANDIDATE, o.SEARCH_FACES_BY_IMAGE):
        assert repeat_rule(op, rekognition=False) is Repeat.ONCE, op
    for op in (o.INDEX_FACES, o.DELETE_COLLECTION, o.DELETE_FACES, o.START_FACE_SEARCH,
               o.START_FACE_DETECTION, o.SEARCH_FACES_BY_IMAGE, o.TAG_RESOURCE,
               o.UNTAG_RESOURCE, o.DELETE_STREAM_PROCESSOR, o.DELETE_USER):
        assert repeat_rule(op, rekognition=True) is Repeat.FIRST_ANSWER, op
    for op in (o.CREATE_COLLECTION, o.CREATE_USER, o.LIST_COLLECTIONS, o.DESCRIBE_COLLECTION,
               o.START_STREAM_PROCESSOR):
        assert repeat_rule(op, rekognition=True) is Repeat.RUN, op
    assert set(HANDLERS) <= set(Operation)


@pytest.mark.databases
def test_answers_are_shared_by_nodes_and_expire(settings: Callable[..., Settings]) -> None:
    """A request that runs once, run on one node: another node (a second service on the same
    database) answers its repeat with the first answer, without running it; a token used with
    other parameters is refused; an error answer of a token is not kept; expired rows go."""
    import asyncio

    from fastapi import Response

    from facesearch.api.replay import Answers, signature_claim, token_claim
    from facesearch.errors import IdempotencyMismatchError

    a, b = FaceSearch(settings()), FaceSearch(settings())
    runs: list[str] = []

    async def io(fn: Callable[[], object]) -> object:
        return fn()

    def runner(name: str, status: int = 200) -> Callable[[], Any]:
        async def run() -> Response:
            runs.append(name)
            return Response(f'{{"ran": "{name}"}}'.encode(), status_code=status)
        return run

    try:
        node_a, node_b = Answers(a.store), Answers(b.store)
        sig = signature_claim("f" * 64, clock_skew_s=300)
        first = asyncio.run(node_a.once(sig, io, runner("a")))
        again = asyncio.run(node_b.once(sig, io, runner("b")))
        assert runs == ["a"] and again.body == first.body and again.status_code == 200
        tok = token_claim("KEY", Operation.CREATE_USER, "t-1", {"UserId": "u", "x": 1})
        other = token_claim("KEY", Operation.CREATE_USER, "t-1", {"UserId": "v", "x": 1})
        asyncio.run(node_a.once(tok, io, runner("tok")))
        assert asyncio.run(node_b.once(tok, io, runner("tok2"))).body == b'{"ran": "tok"}'
        with pytest.raises(IdempotencyMismatchError):
            asyncio.run(node_b.once(other, io, runner("other")))
        assert runs == ["a", "tok"]
        failing = token_claim("KEY", Operation.DELETE_USER, "t-2", {})
        asyncio.run(node_a.once(failing, io, runner("fail", 400)))
        asyncio.run(node_b.once(failing, io, runner("retried")))  # not kept: runs again
        assert runs[-2:] == ["fail", "retried"]
        assert b.store.requests.purge_answers(time.time() + 2 * 86400) >= 3
        assert asyncio.run(node_b.once(sig, io, runner("after"))).body == b'{"ran": "after"}'
    finally:
        a.shutdown()
        b.shutdown()
