"""Issue 26 (hardening, round two), against the real server process (conftest): a case-bound
key cannot act as admin or reach other cases' keys and audit events."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from facesearch.errors import InvalidParameterError
from facesearch.governance.audit.event import AuditEvent
from facesearch.governance.policy import CollectionPolicy
from facesearch.service import FaceSearch
from facesearch.storage.schema import access_keys_t
from facesearch.types import Caller

from ..conftest import face
from .conftest import Server, start_server, stop_server


def bearer(server: Server, key_id: str, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=120,
                        headers={"Authorization": f"Bearer {key_id}:{secret}"})


def test_a_case_bound_key_cannot_hold_or_use_admin(server: Server) -> None:
    with FaceSearch(server.settings()) as fs:
        with pytest.raises(InvalidParameterError, match="cannot hold the admin role"):
            fs.keys.create("admin,searcher", purpose="inquiry", case_ref="CASE-A")
        bound = fs.keys.create("searcher", purpose="inquiry", case_ref="CASE-A")
        other = fs.keys.create("searcher", purpose="inquiry", case_ref="CASE-B")
        # A key stored with admin before the rule (the attack's key): it acts without admin.
        with fs.store.transaction() as conn:
            conn.execute(update(access_keys_t).where(
                access_keys_t.c.key_id == bound.info.key_id).values(role="admin,searcher"))
    with bearer(server, bound.info.key_id, bound.secret) as c:
        made = c.post("/v1/keys", json={"role": "searcher"})
        assert made.status_code == 403, made.text
        made = c.post("/v1/keys", json={"role": "searcher", "purpose": "x",
                                        "case_ref": "CASE-B"})
        assert made.status_code == 403, made.text
        assert c.delete(f"/v1/keys/{other.info.key_id}").status_code == 403
        assert c.post("/v1/collections", json={"name": "by-case-admin"}
                      ).status_code == 403
        who = c.get("/v1/whoami").json()
        assert "CreateKey" not in who["operations"] and "RevokeKey" not in who["operations"]
    with FaceSearch(server.settings()) as fs:
        assert fs.keys.describe(other.info.key_id).revoked_at is None
        assert [k for k in fs.keys.list_keys() if k.case_ref is None and k.created_at >
                bound.info.created_at] == []
        # The service refuses a case-bound caller too (CLI and library callers are unbound).
        caller = Caller(actor=bound.info.key_id, role="searcher", purpose="inquiry",
                        case_ref="CASE-A")
        with pytest.raises(Exception, match="bound to a case"):
            fs.keys.create("searcher", caller=caller)
        with pytest.raises(Exception, match="bound to a case"):
            fs.keys.revoke(other.info.key_id, caller=caller)


def test_a_case_bound_auditor_reads_only_its_case(server: Server) -> None:
    with FaceSearch(server.settings()) as fs:
        mine = fs.keys.create("auditor,searcher", purpose="inquiry", case_ref="CASE-AUD-A")
        theirs = fs.keys.create("searcher", purpose="inquiry", case_ref="CASE-AUD-B")
        for key in (mine, theirs):  # each key's search, recorded under its case
            fs.audit.append(AuditEvent(operation="search.image", actor=key.info.key_id,
                                       role="searcher", purpose="inquiry",
                                       case_ref=key.info.case_ref, collection="watch"))
    with bearer(server, mine.info.key_id, mine.secret) as c:
        events = c.get("/v1/audit", params={"max_results": 10_000}).json()["events"]
        assert events and {e["case_ref"] for e in events} == {"CASE-AUD-A"}
        assert c.get("/v1/audit", params={"case": "CASE-AUD-B"}).status_code == 403
        export = c.get("/v1/audit/export")
        assert export.status_code == 200 and "CASE-AUD-B" not in export.text
        assert "CASE-AUD-A" in export.text
    with server.native("auditor") as c:  # an unbound auditor still reads every case
        cases = {e["case_ref"] for e in c.get("/v1/audit", params={"max_results": 10_000}
                                              ).json()["events"]}
        assert {"CASE-AUD-A", "CASE-AUD-B"} <= cases


def test_failed_authentication_is_throttled_per_source(tmp_path: Path) -> None:
    """After 5 failures in a minute from 127.0.0.1 even the right secret gets 429 from there,
    while 127.0.0.2 (another source) is still served."""
    srv = start_server(tmp_path / "home", tmp_path / "server.log",
                       FACESEARCH_API_AUTH_FAILURES_PER_MINUTE="5")
    try:
        good = srv.keys["auditor"]
        for i in range(5):
            with bearer(srv, good.key_id, f"wrong-{i}") as c:
                assert c.get("/v1/whoami").status_code in (401, 403)
        with bearer(srv, good.key_id, good.secret) as c:
            r = c.get("/v1/whoami")
            assert r.status_code == 429, r.text
            assert int(r.headers["Retry-After"]) >= 1
        other = httpx.Client(base_url=srv.url, timeout=60,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                             headers={"Authorization": f"Bearer {good.key_id}:{good.secret}"})
        with other:
            assert other.get("/v1/whoami").status_code == 200
    finally:
        stop_server(srv)


def test_a_cameras_password_never_reaches_the_server_log(server: Server) -> None:
    """A camera whose host accepts and hangs up: each reconnect logged FFmpeg's error text,
    which named rtsp://viewer:PASSWORD@... (issue 26)."""
    hangup = socket.create_server(("127.0.0.1", 0))
    accepted = 0

    def serve() -> None:
        nonlocal accepted
        while True:
            try:
                conn, _ = hangup.accept()
            except OSError:
                return
            accepted += 1
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    password = "s3cret-pw-26"
    try:
        server.cli("cameras", "add", "door26",
                   f"rtsp://viewer:{password}@127.0.0.1:{hangup.getsockname()[1]}/stream1")
        with server.native("admin") as admin:
            assert admin.post("/v1/collections", json={"name": "cam26"}).status_code == 201
        settings = {"camera": "door26", "collection": "cam26", "reconnect_initial_s": 0.2,
                    "reconnect_max_s": 0.5}
        with server.native("searcher") as c:
            assert c.post("/v1/streams", json={"name": "door26", "settings": settings}
                          ).status_code == 201
            assert c.post("/v1/streams/door26/start").status_code == 200
            deadline = time.monotonic() + 60
            while server.log.read_text().count("door26: ") < 3:
                assert time.monotonic() < deadline, "no reconnects logged"
                time.sleep(0.2)
            c.post("/v1/streams/door26/stop")
            c.delete("/v1/streams/door26")
    finally:
        hangup.close()
    text = server.log.read_text()
    assert accepted >= 3 and "viewer:***@" in text
    assert password not in text


def test_crops_follow_the_collections_purpose_rule(server: Server) -> None:
    """Issue 26: crops of a collection whose searches need a purpose and a case were served
    without either."""
    with FaceSearch(server.settings()) as fs:
        fs.collections.create("purpose26", policy=CollectionPolicy(require_purpose=True))
        face_id = fs.collections.index_image("purpose26", face("obama.jpg")).indexed[0].face_id
        bound = fs.keys.create("searcher", purpose="inquiry", case_ref="CASE-CROPS")
    with server.native("searcher") as c:  # no purpose, no case
        for path in (f"/v1/collections/purpose26/crops?face_id={face_id}",
                     f"/v1/collections/purpose26/faces/{face_id}/crop"):
            r = c.get(path)
            assert r.status_code == 400 and "purpose" in r.text, r.text
    with bearer(server, bound.info.key_id, bound.secret) as c:
        r = c.get(f"/v1/collections/purpose26/faces/{face_id}/crop")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with FaceSearch(server.settings()) as fs:
        refused, _ = fs.audit.query(operation="faces.crops.refused", collection="purpose26")
        shown, _ = fs.audit.query(operation="faces.crops", collection="purpose26")
    assert len(refused) == 2 and [e.event.case_ref for e in shown] == ["CASE-CROPS"]
