"""The audit trail: hash chain, signed checkpoints, tamper detection, concurrency, query, export.

Tests marked ``databases`` run on an SQLite file and on a PostgreSQL database; the tampering
is done with the database's own driver, as an attacker with the file or the server's
superuser would (append-only triggers dropped or disabled first)."""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facesearch.governance.audit.chain import Checkpoint, fingerprint
from facesearch.governance.audit.event import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    canonical_bytes,
    event_hash,
)
from facesearch.governance.audit.export import load_export
from facesearch.governance.audit.log import AuditLog
from facesearch.governance.audit.verify import ProblemKind, read_witness
from facesearch.types import Caller

from ..clirun import CliResult, run_cli
from ..conftest import Databases

P = ProblemKind
N_EVENTS = 12
EVERY = 5  # checkpoints at seq 5 and 10 (and 12 on shutdown)


class StepClock:
    """1000.25, 1001.25, ... one second per call."""

    def __init__(self) -> None:
        self.t = 1000.25

    def __call__(self) -> float:
        self.t += 1.0
        return self.t - 1.0


def make_event(i: int) -> AuditEvent:
    return AuditEvent(
        operation=("search.image", "index", "compare", "search.face")[i % 4],
        actor=f"key{i % 3}", role="analyst", collection="alpha" if i < 6 else "beta",
        purpose="investigation", case_ref="case-7" if i % 2 == 0 else None,
        client="10.0.0.9", probe_sha256=f"{i:064x}", threshold=80 + i / 10,
        model_version="dlib-1", results=((f"face-{i}", 91.25 - i), (f"face-{i + 1}", None)),
        details={"n": i, "ratio": i / 3, "flag": i % 2 == 0, "note": None})


@pytest.fixture
def target(tmp_path: Path, databases: Databases) -> Path | str:
    """The test's audit database: ``audit.db`` in its folder, or its PostgreSQL database."""
    return databases.url or tmp_path / "audit.db"


def open_log(target: Path | str, tmp_path: Path, every: int = EVERY) -> AuditLog:
    return AuditLog(target, tmp_path / "keys" / "audit.pem", clock=StepClock(),
                    checkpoint_every=every)


@pytest.fixture
def log(target: Path | str, tmp_path: Path) -> AuditLog:
    a = open_log(target, tmp_path)
    for i in range(N_EVENTS):
        a.append(make_event(i))
    return a


def all_records(a: AuditLog) -> list[AuditRecord]:
    return a.query(limit=10_000)[0]


@pytest.mark.databases
def test_appends_form_a_hash_chain_with_signed_checkpoints(log: AuditLog) -> None:
    recs = all_records(log)
    assert [r.seq for r in recs] == list(range(1, N_EVENTS + 1))
    assert recs[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    assert all(r.hash == event_hash(r.seq, r.ts, r.prev_hash, r.event) for r in recs)
    assert [r.event for r in recs] == [make_event(i) for i in range(N_EVENTS)]
    assert [(c.seq, c.head_hash) for c in log.checkpoints()] == [(5, recs[4].hash),
                                                                (10, recs[9].hash)]
    report = log.verify(log.public_key())
    assert report.ok and report.events == N_EVENTS and report.checkpoints_valid == 2
    assert (report.head_seq, report.head_hash) == (N_EVENTS, recs[-1].hash)


def test_canonical_form_is_stable() -> None:
    ev = AuditEvent(operation="search.image", actor="FSAK1", threshold=80, results=(("f", 99.5),),
                    details={"b": 1, "a": 0.1})
    assert canonical_bytes(3, 1700000000.5, GENESIS_HASH, ev) == (
        b'{"actor":"FSAK1","case_ref":null,"client":null,"collection":null,'
        b'"details":{"a":0.1,"b":1},"model_version":null,"operation":"search.image",'
        b'"prev_hash":"' + GENESIS_HASH.encode() + b'","probe_sha256":null,"purpose":null,'
        b'"results":[["f",99.5]],"role":null,"seq":3,"threshold":80.0,"ts":1700000000.5,"v":1}')


@pytest.mark.databases
def test_checkpoint_and_shutdown_sign_the_head_once(target: Path | str, tmp_path: Path) -> None:
    a = open_log(target, tmp_path, every=100)
    assert a.checkpoint() is None  # empty log
    for i in range(3):
        a.append(make_event(i))
    cp = a.checkpoint()
    assert cp is not None and cp.seq == 3
    assert a.checkpoint() == cp  # head unchanged: no new checkpoint
    a.append(make_event(3))
    a.shutdown()
    b = open_log(target, tmp_path, every=100)
    assert [c.seq for c in b.checkpoints()] == [3, 4]
    b.shutdown()  # appended nothing: signs nothing
    assert [c.seq for c in open_log(target, tmp_path).checkpoints()] == [3, 4]
    key = tmp_path / "keys" / "audit.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    pem = b.public_key()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert cp.key_fingerprint == fingerprint(loaded.public_key())


def test_caller_fills_who_and_why() -> None:
    c = Caller(actor="FSAKX", role="analyst", purpose="p", case_ref="C-1", client="1.2.3.4")
    ev = AuditEvent.of(c, "search.image", collection="x", results=[("f", 90.0)])
    assert (ev.actor, ev.role, ev.purpose, ev.case_ref, ev.client) == (
        "FSAKX", "analyst", "p", "C-1", "1.2.3.4")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"operation": "Search Image"}, ValueError),
    ({"actor": ""}, ValueError),
    ({"probe_sha256": "not-a-hash"}, ValueError),  # a hash of the image, never the image
    ({"threshold": float("nan")}, ValueError),
    ({"results": (("f", float("inf")),)}, ValueError),
    ({"details": {"nested": [1, 2]}}, TypeError),
    ({"purpose": 3}, TypeError),
])
def test_malformed_events_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    base: dict[str, object] = {"operation": "index", "actor": "a"}
    with pytest.raises(error):
        AuditEvent(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.databases
def test_the_database_refuses_updates_and_deletes(log: AuditLog, target: Path | str,
                                                  databases: Databases) -> None:
    statements = ["UPDATE events SET actor = 'x' WHERE seq = 1", "DELETE FROM events",
                  "DELETE FROM checkpoints"]
    if databases.server is None:
        assert isinstance(target, Path)
        con = sqlite3.connect(target)
        for sql in statements:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                con.execute(sql)
        con.close()
        return
    assert databases.name is not None
    with databases.server.connect(databases.name) as pg:  # even the superuser
        for sql in [*statements, "TRUNCATE events", "TRUNCATE checkpoints"]:
            with pytest.raises(psycopg.IntegrityError, match="append-only"):
                pg.execute(sql)
    assert log.verify().ok


# -- tampering made directly on the database ------------------------------------------------

class Raw:
    """The database opened as an attacker would: its plain driver (sqlite3 on the file, or
    psycopg as the server's superuser), the append-only triggers dropped or disabled."""

    def __init__(self, target: Path | str, databases: Databases) -> None:
        self.con: Any
        if databases.server is None:
            assert isinstance(target, Path)
            self.con = sqlite3.connect(target, isolation_level=None)
            for (name,) in self.con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                self.con.execute(f"DROP TRIGGER {name}")
            self.postgres = False
        else:
            assert databases.name is not None
            self.con = databases.server.connect(databases.name)
            for table in ("events", "checkpoints", "outbox_applied"):
                self.con.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            self.postgres = True

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.con.execute(sql.replace("?", "%s") if self.postgres else sql, params)

    def close(self) -> None:
        self.con.close()


Tamper = Callable[[Raw, list[AuditRecord], Path], None]


def _write_rows(con: Raw, recs: list[AuditRecord]) -> None:
    for r in recs:
        e = r.event
        con.execute(
            "INSERT INTO events (seq, ts, operation, actor, role, collection, purpose, case_ref,"
            " client, probe_sha256, threshold, model_version, results, details, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.seq, r.ts, e.operation, e.actor, e.role, e.collection, e.purpose, e.case_ref,
             e.client, e.probe_sha256, e.threshold, e.model_version,
             json.dumps([list(x) for x in e.results]), json.dumps(dict(e.details)),
             r.prev_hash, r.hash))


def _rechain(recs: list[AuditRecord], start: int) -> list[AuditRecord]:
    """Events ``start``.. with a changed actor, re-hashed into a consistent chain."""
    out: list[AuditRecord] = []
    prev = recs[start - 2].hash
    for r in recs[start - 1:]:
        ev = replace(r.event, actor="mallory")
        h = event_hash(r.seq, r.ts, prev, ev)
        out.append(AuditRecord(r.seq, r.ts, ev, prev, h))
        prev = h
    return out


def edit_field(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("UPDATE events SET actor = 'mallory' WHERE seq = 7")


def edit_similarity(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("UPDATE events SET results = '[[\"face-6\", 85.25000001], [\"face-7\", null]]'"
                " WHERE seq = 7")


def edit_and_rehash(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    r = recs[6]
    ev = replace(r.event, actor="mallory")
    con.execute("UPDATE events SET actor = 'mallory', hash = ? WHERE seq = 7",
                (event_hash(7, r.ts, r.prev_hash, ev),))


def delete_row(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("DELETE FROM events WHERE seq = 7")


def delete_first(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("DELETE FROM events WHERE seq = 1")


def delete_and_renumber(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("DELETE FROM events WHERE seq = 7")
    con.execute("UPDATE events SET seq = -seq WHERE seq > 7")
    con.execute("UPDATE events SET seq = -seq - 1 WHERE seq < 0")


def insert_forged(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    # the forged event links to event 6 as event 7 does: rebuild the table without UNIQUE
    con.execute("CREATE TABLE loose AS SELECT * FROM events")
    con.execute("DROP TABLE events")
    con.execute("ALTER TABLE loose RENAME TO events")
    con.execute("UPDATE events SET seq = -seq WHERE seq >= 7")
    con.execute("UPDATE events SET seq = -seq + 1 WHERE seq < 0")
    ev = AuditEvent(operation="search.image", actor="mallory", collection="alpha")
    ts = recs[5].ts + 0.5
    _write_rows(con, [AuditRecord(7, ts, ev, recs[5].hash, event_hash(7, ts, recs[5].hash, ev))])


def swap_rows(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("UPDATE events SET seq = -7 WHERE seq = 7")
    con.execute("UPDATE events SET seq = 7 WHERE seq = 8")
    con.execute("UPDATE events SET seq = 8 WHERE seq = -7")


def truncate_tail(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("DELETE FROM events WHERE seq >= 9")


def alter_checkpoint(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("UPDATE checkpoints SET head_hash = ? WHERE seq = 10", (recs[8].hash,))


def insert_checkpoint(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    fp = con.execute("SELECT key_fingerprint FROM checkpoints").fetchone()[0]
    con.execute("INSERT INTO checkpoints (seq, head_hash, ts, signature, key_fingerprint) "
                "VALUES (11, ?, 2000.0, ?, ?)",
                (recs[10].hash, "00" * 64, fp))


def rewrite_chain(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    con.execute("DELETE FROM events WHERE seq >= 3")
    _write_rows(con, _rechain(recs, 3))


def rewrite_and_resign(con: Raw, recs: list[AuditRecord], key: Path) -> None:
    rewrite_chain(con, recs, key)
    mallory = Ed25519PrivateKey.generate()
    fp = fingerprint(mallory.public_key())
    new = {r.seq: r.hash for r in _rechain(recs, 3)}
    con.execute("DELETE FROM checkpoints")
    for seq in (5, 10):
        cp = Checkpoint(seq, new[seq], 2000.0, "", fp)
        con.execute("INSERT INTO checkpoints (seq, head_hash, ts, signature, key_fingerprint) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (seq, cp.head_hash, cp.ts, mallory.sign(cp.message()).hex(), fp))
    key.write_bytes(mallory.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


@pytest.mark.parametrize(("tamper", "expected"), [
    (edit_field, {(P.EDITED, 7)}),
    (edit_similarity, {(P.EDITED, 7)}),
    (edit_and_rehash, {(P.BROKEN_LINK, 8)}),
    (delete_row, {(P.DELETED, 7)}),
    (delete_first, {(P.DELETED, 1)}),
    (delete_and_renumber, {(P.DELETED, 7), (P.RENUMBERED, 7), (P.REWRITTEN, 10),
                           (P.TRUNCATED, 12)}),
    (insert_forged, {(P.INSERTED, 7), (P.RENUMBERED, 8), (P.REWRITTEN, 10),
                     (P.REWRITTEN, 12)}),
    (swap_rows, {(P.REORDERED, 7)}),
    (truncate_tail, {(P.TRUNCATED, 9)}),
    (alter_checkpoint, {(P.CHECKPOINT_FORGED, 10)}),
    (insert_checkpoint, {(P.CHECKPOINT_FORGED, 11)}),
    (rewrite_chain, {(P.REWRITTEN, 5), (P.REWRITTEN, 10), (P.REWRITTEN, 12)}),
    (rewrite_and_resign, {(P.CHECKPOINT_FORGED, 5), (P.CHECKPOINT_FORGED, 10)}),
], ids=lambda v: v.__name__ if callable(v) else None)
@pytest.mark.databases
def test_tampering_is_detected_and_located(log: AuditLog, target: Path | str, tmp_path: Path,
                                           databases: Databases, tamper: Tamper,
                                           expected: set[tuple[ProblemKind, int]]) -> None:
    pem = log.public_key()  # the auditor's copy, kept outside the data directory
    recs = all_records(log)
    log.shutdown()  # signs a checkpoint at 12
    con = Raw(target, databases)
    tamper(con, recs, tmp_path / "keys" / "audit.pem")
    con.close()
    report = open_log(target, tmp_path).verify(pem)
    assert not report.ok
    assert {(p.kind, p.seq) for p in report.problems} == expected, report.problems


@pytest.mark.databases
def test_a_replaced_key_file_fools_only_a_verifier_without_the_exported_key(
        log: AuditLog, target: Path | str, tmp_path: Path, databases: Databases) -> None:
    pem = log.public_key()
    recs = all_records(log)
    con = Raw(target, databases)
    rewrite_and_resign(con, recs, tmp_path / "keys" / "audit.pem")
    con.close()
    fresh = open_log(target, tmp_path)
    assert fresh.verify().ok
    assert not fresh.verify(pem).ok


# -- concurrency ----------------------------------------------------------------------------

def _append_worker(db: str, url: bool, key: str, proc: int, n: int, start: Any) -> None:
    start.wait()  # all open the new database (and make the key) at once
    a = AuditLog(db if url else Path(db), Path(key), checkpoint_every=10)
    for i in range(n):
        a.append(AuditEvent(operation="search.image", actor=f"proc{proc}",
                            details={"i": i}))
    a.shutdown()


@pytest.mark.slow
@pytest.mark.databases
def test_concurrent_appends_from_processes_form_one_chain(target: Path | str,
                                                          tmp_path: Path) -> None:
    """Processes (on PostgreSQL: like API nodes) open a new audit database at once - each
    migrating it, one of them first - and append concurrently: one chain, every event once."""
    db, key = target, tmp_path / "keys" / "audit.pem"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_append_worker,
                         args=(str(db), isinstance(db, str), str(key), p, 25, start))
             for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    a = AuditLog(db, key)
    report = a.verify()
    assert report.ok, report.problems
    assert report.events == 100 and report.checkpoints == report.checkpoints_valid >= 10
    recs = all_records(a)
    assert [r.seq for r in recs] == list(range(1, 101))
    assert sorted((r.event.actor, r.event.details["i"]) for r in recs) == sorted(
        (f"proc{p}", i) for p in range(4) for i in range(25))


@pytest.mark.databases
def test_concurrent_appends_from_threads_form_one_chain(target: Path | str,
                                                        tmp_path: Path) -> None:
    a = open_log(target, tmp_path, every=7)
    threads = [threading.Thread(target=lambda t=t: [a.append(AuditEvent(
        operation="compare", actor=f"t{t}", details={"i": i})) for i in range(30)])
        for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = a.verify()
    assert report.ok and report.events == 120 and report.checkpoints == 120 // 7


# -- query and export -----------------------------------------------------------------------

@pytest.mark.parametrize(("filters", "keep"), [
    ({}, lambda r: True),
    ({"actor": "key1"}, lambda r: r.event.actor == "key1"),
    ({"case_ref": "case-7"}, lambda r: r.event.case_ref == "case-7"),
    ({"collection": "beta"}, lambda r: r.event.collection == "beta"),
    ({"operation": "index"}, lambda r: r.event.operation == "index"),
    ({"operation": "search.*"}, lambda r: r.event.operation.startswith("search.")),
    ({"since": 1003.25, "until": 1008.25}, lambda r: 1003.25 <= r.ts < 1008.25),
    ({"actor": "key0", "collection": "alpha", "case_ref": "case-7"},
     lambda r: (r.event.actor, r.event.collection, r.event.case_ref) == ("key0", "alpha",
                                                                         "case-7")),
])
@pytest.mark.databases
def test_query_filters_and_pages(log: AuditLog, filters: dict[str, object],
                                 keep: Callable[[AuditRecord], bool]) -> None:
    want = [r for r in all_records(log) if keep(r)]
    assert want  # every filter matches something in the fixture
    got: list[AuditRecord] = []
    cursor: int | None = 0
    while cursor is not None:
        page, cursor = log.query(**filters, limit=2, after_seq=cursor)  # type: ignore[arg-type]
        assert len(page) <= 2
        got += page
    assert got == want


@pytest.mark.databases
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips(log: AuditLog, fmt: str) -> None:
    buf = io.StringIO()
    assert log.export(fmt, buf) == N_EVENTS  # type: ignore[arg-type]
    back = list(load_export(fmt, io.StringIO(buf.getvalue())))  # type: ignore[arg-type]
    assert back == all_records(log)
    assert all(r.hash == event_hash(r.seq, r.ts, r.prev_hash, r.event) for r in back)
    part = io.StringIO()
    assert log.export(fmt, part, collection="alpha") == 6  # type: ignore[arg-type]


# -- CLI ------------------------------------------------------------------------------------

def _cli(home: Path, *args: str) -> CliResult:
    return run_cli("audit", *args, env={"FACESEARCH_HOME": str(home), "COLUMNS": "200"})


def test_cli_verify_exit_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a = AuditLog(home / "audit.db", home / "keys" / "audit-ed25519.pem", clock=StepClock(),
                 checkpoint_every=EVERY)
    for i in range(N_EVENTS):
        a.append(make_event(i))
    a.shutdown()
    ok = _cli(home, "verify")
    assert ok.returncode == 0, ok.stderr
    listed = _cli(home, "list", "--actor", "key1", "--json")
    assert [e["seq"] for e in json.loads(listed.stdout)["events"]] == [2, 5, 8, 11]
    con = Raw(home / "audit.db", Databases("sqlite"))
    con.execute("UPDATE events SET case_ref = 'other' WHERE seq = 4")
    con.close()
    bad = _cli(home, "verify")
    assert bad.returncode == 1
    assert "4" in bad.stdout and "edited" in bad.stdout


@pytest.mark.databases
def test_append_many_appends_one_chain_with_checkpoints(target: Path | str,
                                                        tmp_path: Path) -> None:
    log = AuditLog(target, tmp_path / "k.pem", checkpoint_every=10)
    log.append(AuditEvent(operation="index", actor="a"))
    recs = log.append_many([AuditEvent(operation="index", actor="a", details={"i": i})
                            for i in range(25)])
    assert [r.seq for r in recs] == list(range(2, 27))
    assert recs[0].prev_hash != recs[1].prev_hash
    assert log.append_many([]) == []
    report = log.verify()
    assert report.ok and report.events == 26 and report.checkpoints >= 1
    log.shutdown()


# -- the signing key and a witness outside the data directory (issue 11, item 4) -----------

def _resign_with(con: Raw, key: Ed25519PrivateKey, heads: dict[int, str]) -> None:
    fp = fingerprint(key.public_key())
    con.execute("DELETE FROM checkpoints")
    for seq, head in heads.items():
        cp = Checkpoint(seq, head, 2000.0, "", fp)
        con.execute("INSERT INTO checkpoints (seq, head_hash, ts, signature, key_fingerprint) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (seq, head, cp.ts, key.sign(cp.message()).hex(), fp))


@pytest.mark.databases
def test_witness_shows_a_rewrite_resigned_with_the_stolen_key(target: Path | str, tmp_path: Path,
                                                             databases: Databases) -> None:
    """Whoever holds the signing key can rewrite and re-sign the chain so that the public key
    says ok; the witness file kept elsewhere still shows every rewritten checkpoint."""
    witness = tmp_path / "elsewhere" / "witness.jsonl"
    witness.parent.mkdir()
    log = AuditLog(target, tmp_path / "keys" / "audit.pem", clock=StepClock(),
                   checkpoint_every=EVERY, witness=witness)
    for i in range(N_EVENTS):
        log.append(make_event(i))
    pem = log.public_key()
    recs = all_records(log)
    log.shutdown()
    assert [cp.seq for cp in read_witness(witness)] == [5, 10, 12]
    stolen = serialization.load_pem_private_key((tmp_path / "keys" / "audit.pem").read_bytes(),
                                                password=None)
    assert isinstance(stolen, Ed25519PrivateKey)
    con = Raw(target, databases)
    rewrite_chain(con, recs, tmp_path / "keys" / "audit.pem")
    new = {r.seq: r.hash for r in _rechain(recs, 3)}
    _resign_with(con, stolen, {5: new[5], 10: new[10], 12: new[12]})
    con.close()
    fresh = open_log(target, tmp_path)
    assert fresh.verify(pem).ok  # the signature alone cannot tell
    report = fresh.verify(pem, read_witness(witness))
    assert {(p.kind, p.seq) for p in report.problems} == {
        (P.REWRITTEN, 5), (P.REWRITTEN, 10), (P.REWRITTEN, 12)}


def _cli_env(home: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(*args, env={"FACESEARCH_HOME": str(home), "COLUMNS": "200", **env})


def test_with_the_data_directory_alone_a_cut_tail_shows_against_the_witness(
        tmp_path: Path) -> None:
    """The service keeps its signing key and witness where configured (outside the data
    directory): nothing in the directory can sign, and cutting the chain's tail together with
    its checkpoints - consistent for the public key - shows against the witness."""
    home, safe = tmp_path / "home", tmp_path / "safe"
    env = {"FACESEARCH_AUDIT_SIGNING_KEY": str(safe / "audit.pem"),
           "FACESEARCH_AUDIT_WITNESS": str(safe / "witness.jsonl")}
    for i in range(4):  # one audited key creation and one checkpoint per process
        r = _cli_env(home, env, "keys", "create", "--role", "searcher", "--label", f"k{i}")
        assert r.returncode == 0, r.stderr
    pem = _cli_env(home, env, "audit", "public-key")
    assert pem.returncode == 0, pem.stderr
    (safe / "audit.pub").write_text(pem.stdout)
    assert (safe / "audit.pem").exists()
    assert not [p for p in home.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    ok = _cli_env(home, env, "audit", "verify", "--public-key", str(safe / "audit.pub"),
                  "--witness", str(safe / "witness.jsonl"), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["events"] == 4
    con = Raw(home / "audit.db", Databases("sqlite"))  # the attacker, with the directory only
    con.execute("DELETE FROM events WHERE seq > 2")
    con.execute("DELETE FROM checkpoints WHERE seq > 2")
    con.close()
    fooled = _cli_env(home, env, "audit", "verify", "--public-key", str(safe / "audit.pub"))
    assert fooled.returncode == 0  # what the data directory says is consistent
    bad = _cli_env(home, env, "audit", "verify", "--public-key", str(safe / "audit.pub"),
                   "--witness", str(safe / "witness.jsonl"), "--json")
    assert bad.returncode == 1
    kinds = {(p["kind"], p["seq"]) for p in json.loads(bad.stdout)["problems"]}
    assert kinds == {("truncated", 3)}


def test_law_enforcement_deployment_refuses_a_signing_key_in_the_data_directory(
        tmp_path: Path) -> None:
    from facesearch.config import Settings
    from facesearch.errors import InvalidParameterError
    from facesearch.governance.audit.chain import AuditKeyError
    from facesearch.governance.policy import CollectionPolicy
    from facesearch.service import FaceSearch

    home, safe = tmp_path / "home", tmp_path / "safe"
    with pytest.raises(AuditKeyError, match="law-enforcement"):
        FaceSearch(Settings(home=home, law_enforcement=True))
    with pytest.raises(AuditKeyError, match="outside the data directory"):
        FaceSearch(Settings(home=home, audit_signing_key=home / "keys" / "a.pem"))
    with FaceSearch(Settings(home=home)) as fs:  # elsewhere: the key in the directory, warned
        # a law-enforcement collection is refused there (the next start would fail), and so is
        # turning an existing collection into one; nothing is created
        with pytest.raises(InvalidParameterError, match="FACESEARCH_AUDIT_SIGNING_KEY"):
            fs.collections.create("bookings", policy=CollectionPolicy(law_enforcement=True))
        fs.collections.create("plain")
        with pytest.raises(InvalidParameterError, match="FACESEARCH_AUDIT_SIGNING_KEY"):
            fs.collections.set_policy("plain", CollectionPolicy(law_enforcement=True))
        assert [c.name for c in fs.collections.list_collections()] == ["plain"]
        assert not fs.collections.describe("plain").policy.law_enforcement
    with FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem")) as fs:
        fs.collections.create("bookings", policy=CollectionPolicy(law_enforcement=True))
    with pytest.raises(AuditKeyError, match="FACESEARCH_AUDIT_SIGNING_KEY"):
        FaceSearch(Settings(home=home))  # a law-enforcement collection: not without the key
    # The key the first start left in the directory must go (issue 26).
    with pytest.raises(AuditKeyError, match="a private key remains"):
        FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem"))
    (home / "keys" / "audit-ed25519.pem").unlink()
    with FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem")) as fs:
        fs.audit.append(AuditEvent(operation="test", actor="a"))
    assert (safe / "a.pem").stat().st_mode & 0o777 == 0o600


def test_a_hard_linked_or_left_behind_signing_key_is_caught(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26: a signing key hard-linked into the data directory was accepted, and the old
    ``<home>/keys/audit-ed25519.pem`` stayed after the key was moved out, unwarned."""
    from facesearch.config import Settings
    from facesearch.governance.audit.chain import AuditKeyError
    from facesearch.governance.policy import CollectionPolicy
    from facesearch.service import FaceSearch

    home, safe = tmp_path / "home", tmp_path / "safe"
    with FaceSearch(Settings(home=home)) as fs:  # the default: the key in the directory
        fs.audit.append(AuditEvent(operation="test", actor="a"))
    inside = home / "keys" / "audit-ed25519.pem"
    safe.mkdir()
    os.link(inside, safe / "a.pem")  # "moved out" as a hard link: the same file
    with pytest.raises(AuditKeyError, match="hard link"):
        FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem"))
    (safe / "a.pem").unlink()
    (safe / "a.pem").write_bytes(inside.read_bytes())  # a real copy, the original left behind
    with caplog.at_level("WARNING", logger="facesearch.setup"), \
            FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem")) as fs:
        fs.collections.create("bookings", policy=CollectionPolicy(law_enforcement=True))
    assert "a private key remains in the data directory" in caplog.text
    with pytest.raises(AuditKeyError, match="a private key remains"):  # law enforcement
        FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem"))
    inside.unlink()
    with FaceSearch(Settings(home=home, audit_signing_key=safe / "a.pem")) as fs:
        assert fs.collections.describe("bookings").policy.law_enforcement


# -- Merkle tree and inclusion proofs (RFC 9162) ---------------------------------------------

def test_inclusion_proofs_verify_for_every_leaf_of_every_size() -> None:
    from facesearch.governance.audit.chain import (
        inclusion_path,
        merkle_leaf,
        merkle_root,
        verify_inclusion,
    )

    leaves = [merkle_leaf(f"{i:064x}") for i in range(17)]
    for size in range(1, 18):
        root = merkle_root(leaves[:size])
        for i in range(size):
            path = inclusion_path(i, leaves[:size])
            assert verify_inclusion(leaves[i], i, size, path, root)
            assert not verify_inclusion(leaves[(i + 1) % 17], i, size, path, root) or size == 1
            if path:
                bad = [bytes(32)] + path[1:]
                assert not verify_inclusion(leaves[i], i, size, bad, root)


def test_signed_tree_roots_across_processes_and_proofs_of_one_event(tmp_path: Path) -> None:
    """Checkpoints sign the Merkle root over every event so far (kept up across reopenings);
    'audit prove' gives one event's proof that 'audit check-proof' checks with the public key
    alone, and a changed event or another key fails it."""
    home = tmp_path / "home"
    for part in range(3):  # three processes, one after the other
        a = AuditLog(home / "audit.db", home / "keys" / "audit-ed25519.pem", clock=StepClock(),
                     checkpoint_every=4)
        for i in range(5):
            a.append(make_event(part * 5 + i))
        a.shutdown()
    a = AuditLog(home / "audit.db", home / "keys" / "audit-ed25519.pem")
    cps = a.checkpoints()
    assert all(cp.tree_root for cp in cps) and cps[-1].seq == 15
    assert a.verify().ok  # every signed root recomputed from the stored events
    pem = tmp_path / "audit.pub"
    pem.write_bytes(a.public_key())
    a.shutdown()
    proof = _cli(home, "prove", "7")
    assert proof.returncode == 0, proof.stderr
    p = json.loads(proof.stdout)
    assert p["tree_size"] == 15 and p["event"]["seq"] == 7 and len(p["audit_path"]) == 4
    (tmp_path / "proof.json").write_text(proof.stdout)
    ok = _cli(home, "check-proof", str(tmp_path / "proof.json"), "--public-key", str(pem))
    assert ok.returncode == 0 and "ok: event 7" in ok.stdout, ok.stdout + ok.stderr
    forged = dict(p, event={**p["event"], "actor": "mallory"})
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    bad = _cli(home, "check-proof", str(tmp_path / "forged.json"), "--public-key", str(pem))
    assert bad.returncode == 1 and "does not match its hash" in bad.stderr
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "other.pub").write_bytes(other)
    wrong = _cli(home, "check-proof", str(tmp_path / "proof.json"), "--public-key",
                 str(tmp_path / "other.pub"))
    assert wrong.returncode == 1 and "not signed by the given key" in wrong.stderr
    moved = dict(p, leaf_index=5)
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert _cli(home, "check-proof", str(tmp_path / "moved.json"), "--public-key",
                str(pem)).returncode == 1
