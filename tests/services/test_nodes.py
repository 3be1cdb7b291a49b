"""Several API nodes on one PostgreSQL: each node a process with a data directory of its own
(vector index caches only), sharing the metadata, the audit trail and the secrets; and the
database roles docs/deploy.md sets up."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, event

from facesearch.config import Settings
from facesearch.errors import AlreadyExistsError, DatabaseError
from facesearch.governance.audit.event import AuditEvent
from facesearch.service import FaceSearch
from facesearch.storage import migrate
from facesearch.storage.migrate import Schema
from facesearch.storage.records import NewFace, NewImage
from facesearch.vision.pipeline import Pipeline

from ..conftest import Databases, face
from ..postgres import PostgresServer, binaries

EVENTS_PER_NODE = 40
NODE_IMAGES = {0: ["obama.jpg", "biden.jpg"], 1: ["obama2.jpg", "two_people.jpg"]}
BOTH = "obama-480p.jpg"
"""Indexed by both nodes at once: stored once, a duplicate for the other."""


def _shared_secrets(secrets: Path) -> None:
    """What an operator hands every node: the audit signing key and the keys master key."""
    secrets.mkdir(mode=0o700, parents=True)
    (secrets / "audit-ed25519.pem").write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (secrets / "master.key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    for f in secrets.iterdir():
        f.chmod(0o600)


def _node(n: int, settings: dict[str, str], start: Any, created: Any, out: str) -> None:
    """One API node: open at once with the other (both migrate the new database), index into
    the shared collection, search, create a key, and append its own events."""
    start.wait()
    fs = FaceSearch(Settings(**settings))  # type: ignore[arg-type]
    try:
        if n == 0:
            fs.collections.create("shared")
        created.wait()
        indexed: list[str] = []
        duplicates = 0
        for i, name in enumerate([*NODE_IMAGES[n], BOTH]):
            res = fs.collections.index_image("shared", face(name), external_id=f"n{n}-{name}")
            indexed += [f.face_id for f in res.indexed]
            duplicates += res.duplicate
            for j in range(EVENTS_PER_NODE // 3):
                fs.audit.append(AuditEvent(operation="test.node", actor=f"node{n}",
                                           details={"i": i * 100 + j}))
            fs.search.by_image("shared", face("obama2.jpg"), threshold=0)
        key = fs.keys.create("searcher", label=f"node{n}")
        Path(out).write_text(json.dumps({"indexed": indexed, "duplicates": duplicates,
                                         "key": [key.info.key_id, key.secret]}))
    finally:
        fs.shutdown()


@pytest.mark.slow
def test_two_api_nodes_share_collections_keys_and_one_audit_chain(
        tmp_path: Path, postgres: Databases, pipeline: Pipeline) -> None:
    """Two nodes append concurrently (searches, staged index events drained through the
    outbox, direct events): the chain verifies with no fork, every event is in it exactly
    once, and a third node sees every face and key either made."""
    secrets = tmp_path / "secrets"
    _shared_secrets(secrets)
    common = {k: str(v) for k, v in postgres.settings(secrets).items()}
    ctx = multiprocessing.get_context("spawn")
    start, created = ctx.Barrier(2), ctx.Barrier(2)
    procs = [ctx.Process(target=_node, args=(n, {**common, "home": str(tmp_path / f"node{n}")},
                                             start, created, str(tmp_path / f"node{n}.json")))
             for n in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    made = [json.loads((tmp_path / f"node{n}.json").read_text()) for n in (0, 1)]
    assert sum(m["duplicates"] for m in made) == 1  # the image both indexed is stored once

    third = Settings(home=tmp_path / "node2", **common)  # type: ignore[arg-type]
    with FaceSearch(third, pipeline=pipeline) as fs:
        pem = (secrets / "audit-ed25519.pem").read_bytes()
        public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        report = fs.audit.verify(public)
        assert report.ok, report.problems
        assert report.checkpoints == report.checkpoints_valid >= 2  # both nodes' shutdowns
        records, _ = fs.audit.query(limit=10_000)
        assert [r.seq for r in records] == list(range(1, report.events + 1))
        assert len({r.hash for r in records}) == len(records)
        mine = Counter((r.event.actor, r.event.details["i"]) for r in records
                       if r.event.operation == "test.node")
        assert set(mine.values()) == {1}
        assert sorted(mine) == sorted((f"node{n}", i * 100 + j) for n in (0, 1)
                                      for i in range(3) for j in range(EVENTS_PER_NODE // 3))
        indexed = [f for m in made for f in m["indexed"]]
        in_events = Counter(f for r in records if r.event.operation == "index"
                            for f, _ in r.event.results)
        assert in_events == Counter(indexed)  # each indexed face: one index event
        faces, _ = fs.collections.list_faces("shared")
        assert sorted(f.face_id for f in faces) == sorted(indexed)
        hits = fs.search.by_image("shared", face("obama2.jpg")).results[0].matches
        assert {m.face.external_id for m in hits} >= {"n0-obama.jpg", "n1-obama2.jpg"}
        for m in made:
            assert fs.keys.lookup(m["key"][0]).secret == m["key"][1]
        with pytest.raises(AlreadyExistsError):
            fs.collections.create("shared")


# -- the roles of docs/deploy.md --------------------------------------------------------------

@pytest.fixture
def roles(postgres_server: PostgresServer) -> Iterator[tuple[str, str, str, str]]:
    """An owner role with a metadata and an audit database of its own, and an application
    role with the privileges docs/deploy.md grants: (owner, app, metadata db, audit db)."""
    tag = uuid.uuid4().hex[:8]
    owner, app = f"fs_owner_{tag}", f"fs_app_{tag}"
    meta, audit = postgres_server.create_database(), postgres_server.create_database()
    with postgres_server.connect() as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN")
        admin.execute(f"CREATE ROLE {app} LOGIN")
        for db in (meta, audit):
            admin.execute(f'ALTER DATABASE "{db}" OWNER TO {owner}')
    yield owner, app, meta, audit
    for db in (meta, audit):
        postgres_server.drop_database(db)
    with postgres_server.connect() as admin:
        admin.execute(f"DROP ROLE {app}")
        admin.execute(f"DROP ROLE {owner}")


def _grant(server: PostgresServer, owner: str, app: str, meta: str, audit: str) -> None:
    """The default privileges of docs/deploy.md, set by the owner before it migrates: every
    table a revision makes gets them."""
    with psycopg.connect(host=str(server.socket_dir), user=owner, dbname=meta,
                         autocommit=True) as conn:
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                     f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}")
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                     f"GRANT USAGE, SELECT ON SEQUENCES TO {app}")
    with psycopg.connect(host=str(server.socket_dir), user=owner, dbname=audit,
                         autocommit=True) as conn:
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                     f"GRANT SELECT, INSERT ON TABLES TO {app}")


def test_an_application_role_that_may_only_append_to_the_audit_trail(
        tmp_path: Path, postgres_server: PostgresServer, roles: tuple[str, str, str, str],
        pipeline: Pipeline) -> None:
    """The owner migrates ('facesearch db upgrade'); the nodes' role reads and writes the
    metadata but may only read and append to the audit trail: the service works, and that
    role can neither change the chain nor switch its triggers off."""
    owner, app, meta, audit = roles
    secrets = tmp_path / "secrets"
    _shared_secrets(secrets)
    as_app = {"home": tmp_path / "home", "database_url": postgres_server.url(meta, app),
              "audit_database_url": postgres_server.url(audit, app),
              "audit_signing_key": secrets / "audit-ed25519.pem",
              "keys_master_key_file": secrets / "master.key"}
    _grant(postgres_server, owner, app, meta, audit)
    with pytest.raises(DatabaseError, match="run 'facesearch db upgrade' as the role that owns"):
        FaceSearch(Settings(**as_app), pipeline=pipeline)  # type: ignore[arg-type]
    assert migrate.upgrade(postgres_server.url(meta, owner), Schema.METADATA) == migrate.head(Schema.METADATA)
    assert migrate.upgrade(postgres_server.url(audit, owner), Schema.AUDIT) == migrate.head(Schema.AUDIT)

    with FaceSearch(Settings(**as_app), pipeline=pipeline) as fs:  # type: ignore[arg-type]
        fs.collections.create("c")
        kept = fs.collections.index_image("c", face("biden.jpg")).indexed[0]
        gone = fs.collections.index_image("c", face("obama.jpg")).indexed[0]
        fs.keys.create("auditor")
        fs.erasure.erase("c", face_ids=[gone.face_id])  # its VACUUM: skipped, not an error
        hits = fs.search.by_image("c", face("biden.jpg")).results[0].matches
        assert [m.face.face_id for m in hits] == [kept.face_id]
        fs.audit.checkpoint()
        assert fs.audit.verify().ok
    with psycopg.connect(host=str(postgres_server.socket_dir), user=app, dbname=audit,
                         autocommit=True) as conn:
        for sql in ("UPDATE events SET actor = 'mallory'", "DELETE FROM checkpoints",
                    "TRUNCATE events", "ALTER TABLE events DISABLE TRIGGER USER",
                    "DROP TRIGGER events_no_update_delete ON events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)


# -- incremental vector sync -------------------------------------------------------------------

class _RowsRead:
    """Rows the SELECTs of one engine returned while counting (psycopg reports them)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows = 0
        self.on = False
        event.listen(engine, "after_cursor_execute", self._count)

    def _count(self, _conn: object, cursor: Any, statement: str, *_: object) -> None:
        if self.on and statement.lstrip().upper().startswith("SELECT"):
            self.rows += max(0, cursor.rowcount)

    def __enter__(self) -> _RowsRead:
        self.rows, self.on = 0, True
        return self

    def __exit__(self, *_: object) -> None:
        self.on = False


def _fill(fs: FaceSearch, name: str, n: int) -> list[str]:
    """``n`` faces with random vectors (as bench/search_latency.py stores them); their ids."""
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(n, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = {"size": 50.0, "sharpness": 50.0, "brightness": 50.0, "yaw": 0.0, "pitch": 0.0,
         "roll": 0.0}
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, name)
        image = fs.store.images.insert(conn, coll.id, NewImage(
            image_id=str(uuid.uuid4()), sha256="synthetic", source=None, external_id=None,
            width=250, height=250, faces_detected=n, faces_indexed=n), time.time())
        fs.store.faces.insert(conn, coll.id, image, [NewFace(
            face_id=ids[j], external_id=None, box=(0, 0, 100, 100),
            landmarks=[[0.0, 0.0]] * 5, score=0.99, quality=q, embedding=vecs[j])
            for j in range(n)], 250, 250, time.time(), coll.model_version)
    return ids


def _matches(fs: FaceSearch, name: str) -> set[str]:
    return {m.face.face_id for m in fs.search.by_image("c", face(name)).results[0].matches}


def test_a_deletion_reaches_the_other_node_from_the_change_log_not_a_full_resync(
        tmp_path: Path, postgres: Databases, pipeline: Pipeline) -> None:
    """Node B's index applies node A's deletions from the change log at its next search
    (reading tens of rows of a 3,000-face collection, not all of them), and after a restart
    applies only what changed while it was down."""
    secrets = tmp_path / "secrets"
    _shared_secrets(secrets)
    common = postgres.settings(secrets)
    a = FaceSearch(Settings(home=tmp_path / "a", **common), pipeline=pipeline)  # type: ignore[arg-type]
    b = FaceSearch(Settings(home=tmp_path / "b", **common), pipeline=pipeline)  # type: ignore[arg-type]
    try:
        a.collections.create("c")
        obama = a.collections.index_image("c", face("obama.jpg")).indexed[0].face_id
        others = _fill(a, "c", 3000)
        assert obama in _matches(b, "obama2.jpg")
        assert (b.indexes.stats.full, b.indexes.stats.rows) == (1, 3001)  # first use: all

        a.erasure.delete_faces("c", [obama, *others[:5]])
        rows = _RowsRead(b.store.engine)
        with rows:
            found = _matches(b, "obama2.jpg")
        assert obama not in found
        assert b.indexes.stats.full == 1 and b.indexes.stats.incremental == 1
        assert b.indexes.stats.rows == 3001 + 6  # the six rows the log names
        assert rows.rows < 100  # every statement of the search, against 2,995 faces
    finally:
        b.shutdown()
    try:  # B restarts after A indexed a face and deleted others
        biden = a.collections.index_image("c", face("biden.jpg")).indexed[0].face_id
        a.erasure.delete_faces("c", others[5:8])
        b = FaceSearch(Settings(home=tmp_path / "b", **common), pipeline=pipeline)  # type: ignore[arg-type]
        rows = _RowsRead(b.store.engine)
        with rows:
            assert biden in _matches(b, "biden.jpg")
        assert (b.indexes.stats.full, b.indexes.stats.incremental) == (0, 1)
        assert b.indexes.stats.rows == 1 + 3
        assert rows.rows < 100
        with b.store.transaction() as conn:
            coll = b.store.collections.get(conn, "c")
            truth = b.store.faces.all_rows(conn, coll.id)
        assert len(truth) == 3001 - 6 + 1 - 3
        assert sorted(b.indexes.get(coll).ids().tolist()) == truth.tolist()
    finally:
        b.shutdown()
        a.shutdown()


# -- a backend down ------------------------------------------------------------------------------

@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start."""
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed")
    server = PostgresServer.start(bindir)
    yield server
    server.stop()


@pytest.mark.slow
def test_postgresql_down_answers_503_at_once_then_the_node_recovers(
        tmp_path: Path, own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL stopped under a running API node: every request is answered within seconds
    with 503 (Rekognition: ThrottlingException, HTTP 500, which boto3 retries), /readyz 503,
    one log line per kind of failure and no traceback; once PostgreSQL is back the node
    answers again by itself."""
    from botocore.exceptions import ClientError

    from ..api.conftest import log_lines, signing_key_for, start_server, stop_server

    secrets = tmp_path / "secrets"
    _shared_secrets(secrets)
    home = tmp_path / "home"
    signing_key_for(home).parent.mkdir(parents=True)
    (secrets / "audit-ed25519.pem").rename(signing_key_for(home))
    url = own_postgres.url(own_postgres.create_database())
    for k, v in {"DATABASE_URL": url, "AUDIT_DATABASE_URL": url,
                 "KEYS_MASTER_KEY_FILE": str(secrets / "master.key")}.items():
        monkeypatch.setenv(f"FACESEARCH_{k}", v)
    srv = start_server(home, tmp_path / "server.log")
    try:
        srv.rekognition("admin").create_collection(CollectionId="c")
        srv.rekognition("indexer").index_faces(
            CollectionId="c", Image={"Bytes": face("obama.jpg").read_bytes()})
        rek = srv.rekognition("searcher")
        probe = {"Bytes": face("obama2.jpg").read_bytes()}
        assert rek.search_faces_by_image(CollectionId="c", Image=probe)["FaceMatches"]
        native = srv.native("admin")
        own_postgres.pause()
        for _ in range(3):
            t = time.monotonic()
            with pytest.raises(ClientError) as info:
                rek.search_faces_by_image(CollectionId="c", Image=probe)
            assert info.value.response["Error"]["Code"] == "ThrottlingException"
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
            r = native.get("/v1/collections")
            assert r.status_code == 503 and r.json()["code"] == "unavailable"
            assert int(r.headers["Retry-After"]) >= 1
            assert httpx.get(f"{srv.url}/readyz", timeout=30).status_code == 503
            assert time.monotonic() - t < 30  # each answered at once (no 60 s hang)
        lines = [x for x in log_lines(srv) if "unavailable, answering 503" in x["msg"]]
        assert 1 <= len(lines) <= 3  # a line per kind of failure, not one per request
        assert not [x for x in log_lines(srv) if "exc" in x]  # no traceback
        own_postgres.resume()
        deadline = time.monotonic() + 60
        while httpx.get(f"{srv.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the node did not recover"
            time.sleep(0.5)
        assert rek.search_faces_by_image(CollectionId="c", Image=probe)["FaceMatches"]
        assert native.get("/v1/collections").status_code == 200
    finally:
        stop_server(srv)


def test_any_node_appends_the_audit_events_a_crashed_node_staged(
        tmp_path: Path, postgres: Databases, pipeline: Pipeline) -> None:
    """Node A commits faces with their audit event staged in the outbox and dies before
    appending it (os._exit in a child process); node B's sweeper appends it (once), without
    A restarting, and leaves fresh events of live nodes to them."""
    secrets = tmp_path / "secrets"
    _shared_secrets(secrets)
    common = {k: str(v) for k, v in postgres.settings(secrets).items()}
    b = FaceSearch(Settings(home=tmp_path / "b", **common), pipeline=pipeline)  # type: ignore[arg-type]
    try:  # B runs (it drained the outbox when it opened); then A crashes
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=_stage_and_crash, args=({**common, "home": str(tmp_path / "a")},))
        p.start()
        p.join(300)
        assert p.exitcode == 9
        with b.store.transaction() as conn:
            assert len(b.store.outbox.oldest(conn)) == 1
            b.trail.stage(conn, AuditEvent(operation="test.fresh", actor="live"), time.time())
        from facesearch.governance.trail import OutboxSweeper

        sweeper = OutboxSweeper(b.trail, interval_s=30, clock=lambda: time.time() + 3600)
        assert sweeper.run_once() == 2  # an hour on: both are stale
        assert OutboxSweeper(b.trail).run_once() == 0
        records, _ = b.audit.query(limit=1000)
        assert [r.event.actor for r in records if r.event.operation == "test.crashed"] == ["a"]
        assert b.audit.verify().ok
    finally:
        b.shutdown()


def _stage_and_crash(settings: dict[str, str]) -> None:
    fs = FaceSearch(Settings(**settings))  # type: ignore[arg-type]
    with fs.store.transaction() as conn:
        fs.trail.stage(conn, AuditEvent(operation="test.crashed", actor="a"), time.time() - 60)
    os._exit(9)  # no drain, no shutdown
