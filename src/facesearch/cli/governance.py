"""``facesearch audit ...``, ``keys ...``, ``erase``, ``retention`` and ``review``:
accountability."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facesearch.cli.common import (
    CaseOpt,
    HomeOpt,
    JsonOpt,
    PurposeOpt,
    emit,
    emit_json,
    err,
    out,
    service,
    ts,
)
from facesearch.shapes.accountability import AuditPage, ReceiptOut, ReceiptsOut, VerifyOut
from facesearch.shapes.keys import KeyCreatedOut, KeyOut
from facesearch.types import Caller

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail: verify, list, export, "
                                                   "checkpoint, public key, transparency "
                                                   "report.")


ActorOpt = Annotated[str | None, typer.Option("--actor", help="Only this key id or user.")]


CaseFilterOpt = Annotated[str | None, typer.Option("--case", help="Only this case reference.")]


CollectionFilterOpt = Annotated[str | None, typer.Option("--collection",
                                                         help="Only this collection.")]


OperationOpt = Annotated[str | None, typer.Option(
    "--operation", help="Only this operation ('search.*' for a prefix).")]


SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="From this time on: ISO 8601 (local time unless it has an offset) or "
                    "seconds since the epoch.")]


UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this time (as --since).")]


def _audit_time(value: str | None, option: str) -> float | None:
    """``value`` as seconds since the epoch (a number, or ISO 8601 in local time)."""
    from datetime import datetime

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r}: give ISO 8601 (2024-05-01T12:00) or "
                                 f"seconds since the epoch") from None


@audit_app.command("verify")
def audit_verify(
    home: HomeOpt = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="Check checkpoints with this exported public key (PEM) instead "
                             "of the configured signing key.")] = None,
    witness: Annotated[Path | None, typer.Option(
        "--witness", help="Also hold the chain to the checkpoints in this witness file (kept "
                          "outside the data directory): shows a rewrite or a cut tail.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 if anything was tampered with."""
    from facesearch.governance.audit.verify import read_witness

    pem = public_key.read_bytes() if public_key is not None else None
    witnessed = read_witness(witness) if witness is not None else None
    with service(home) as fs:
        report = fs.audit.verify(pem, witnessed)
    if as_json:
        emit(VerifyOut.model_validate(report))
    else:
        for p in report.problems:
            out.print(f"seq {p.seq}: {p.kind.value}: {p.message}", highlight=False,
                      soft_wrap=True)
        verdict = "ok" if report.ok else f"TAMPERED ({len(report.problems)} problem(s))"
        out.print(f"{verdict}: {report.events} events, head seq {report.head_seq} "
                  f"{report.head_hash[:16]}..., {report.checkpoints_valid} of "
                  f"{report.checkpoints} checkpoint(s) valid", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    home: HomeOpt = None, actor: ActorOpt = None, case: CaseFilterOpt = None,
    collection: CollectionFilterOpt = None, operation: OperationOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    next_token: Annotated[int, typer.Option(help="Cursor from the previous page.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List audit events, oldest first, a page at a time."""
    with service(home) as fs:
        records, nxt = fs.audit.query(
            actor=actor, case_ref=case, collection=collection, operation=operation,
            since=_audit_time(since, "--since"), until=_audit_time(until, "--until"),
            limit=limit, after_seq=next_token)
    if as_json:
        emit(AuditPage(events=[r.to_json() for r in records],
                       next_token=None if nxt is None else str(nxt)))
        return
    t = Table("seq", "time", "operation", "actor", "collection", "case", "purpose", "results")
    for r in records:
        e = r.event
        t.add_row(str(r.seq), ts(r.ts), e.operation, e.actor, e.collection or "",
                  e.case_ref or "", e.purpose or "", str(len(e.results)))
    out.print(t)
    if nxt is not None:
        out.print(f"more: --next-token {nxt}")


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here instead of stdout.")] = None,
    home: HomeOpt = None, actor: ActorOpt = None, case: CaseFilterOpt = None,
    collection: CollectionFilterOpt = None, operation: OperationOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
) -> None:
    """Export audit events (every field, with their hashes) as JSON lines or CSV."""
    if fmt not in ("jsonl", "csv"):
        raise typer.BadParameter("--format must be jsonl or csv")
    filters = {"actor": actor, "case_ref": case, "collection": collection,
               "operation": operation, "since": _audit_time(since, "--since"),
               "until": _audit_time(until, "--until")}
    with service(home) as fs:
        if output is None:
            n = fs.audit.export(fmt, sys.stdout, **filters)  # type: ignore[arg-type]
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                n = fs.audit.export(fmt, f, **filters)  # type: ignore[arg-type]
    err.print(f"exported {n} event(s)")


def _report_bound(value: str, option: str, *, end: bool) -> float:
    """A report's period bound: a date (``--to`` a date includes that whole day), an ISO 8601
    time (local unless it has an offset) or seconds since the epoch."""
    from datetime import date, datetime, timedelta

    try:
        day = date.fromisoformat(value)
    except ValueError:
        t = _audit_time(value, option)
        assert t is not None
        return t
    start = datetime(day.year, day.month, day.day)
    return (start + timedelta(days=1) if end else start).timestamp()


def _default_period() -> tuple[str, str]:
    """The last 30 days, today included: ``--from`` and ``--to`` as dates."""
    from datetime import date, timedelta

    today = date.today()
    return (today - timedelta(days=29)).isoformat(), today.isoformat()


@audit_app.command("report")
def audit_report(
    start: Annotated[str | None, typer.Option(
        "--from", help="Period start: a date (2026-01-01), ISO 8601 time or seconds since the "
                       "epoch. Default: 29 days before --to's day (30 days in all).",
        show_default=False)] = None,
    end: Annotated[str | None, typer.Option(
        "--to", help="Period end: a date (included whole), ISO 8601 time or seconds "
                     "(excluded). Default: today.", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, pdf or json.")] = "html",
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write here; '-' for stdout (json, or html into a pipe). "
                            "Default: transparency-report-FROM-TO.FORMAT in the current "
                            "folder.", show_default=False)] = None,
    home: HomeOpt = None,
) -> None:
    """The transparency report of a period (by default the last 30 days), in aggregates only
    (no faces, case references or probe hashes; purposes named only from the operator's
    published list, small counts combined): searches by kind, purpose and collection,
    refusals, candidates returned and their review outcomes, live-stream matches, erasures and
    retention, keys issued and revoked, with charts; HTML or PDF for an oversight body, or
    JSON. Written to a file (its name printed), never as HTML or PDF onto a terminal."""
    from datetime import date, timedelta

    from facesearch.governance.report import public_report
    from facesearch.governance.report_render import render

    if fmt not in ("html", "pdf", "json"):
        raise typer.BadParameter("--format must be html, pdf or json")
    if start is None or end is None:
        default_from, default_to = _default_period()
        if end is None:
            end = default_to
        if start is None:
            try:
                start = (date.fromisoformat(end) - timedelta(days=29)).isoformat()
            except ValueError:
                start = default_from
    to_stdout = output is not None and str(output) == "-"
    if to_stdout and fmt == "pdf":
        raise typer.BadParameter("a PDF is written to a file: give --out FILE")
    if to_stdout and fmt == "html" and sys.stdout.isatty():
        raise typer.BadParameter("HTML is not written onto a terminal: give --out FILE (or "
                                 "pipe it)")
    lo, hi = _report_bound(start, "--from", end=False), _report_bound(end, "--to", end=True)
    with service(home) as fs:
        report = public_report(fs.audit, lo, hi,
                               purposes=fs.settings.report_purposes.split(","),
                               min_count=fs.settings.report_min_count)
    body, _ = render(report, fmt)
    if to_stdout:
        sys.stdout.write(body.decode("utf-8"))
        return
    if output is None:
        output = Path(f"transparency-report-{_stamp(start)}-{_stamp(end)}.{fmt}")
    output.write_bytes(body)
    err.print(f"wrote the transparency report ({report.searches} searches, "
              f"{report.refusals} refusals) to {output}", highlight=False)


def _stamp(value: str) -> str:
    """A period bound as a file-name part (a date as given, anything else made safe)."""
    return "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in value)


@audit_app.command("checkpoint")
def audit_checkpoint(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Sign the current head of the chain now (if no checkpoint covers it yet)."""
    with service(home) as fs:
        cp = fs.audit.checkpoint()
    if as_json:
        emit_json(None if cp is None else {"seq": cp.seq, "head_hash": cp.head_hash,
                                           "ts": cp.ts, "signature": cp.signature,
                                           "key_fingerprint": cp.key_fingerprint})
    elif cp is None:
        out.print("the audit trail is empty: nothing to sign")
    else:
        out.print(f"checkpoint at seq {cp.seq}: {cp.head_hash} "
                  f"(key {cp.key_fingerprint[:16]}...)", highlight=False, soft_wrap=True)


@audit_app.command("prove")
def audit_prove(
    seq: Annotated[int, typer.Argument(min=1, help="The event's seq.")],
    home: HomeOpt = None,
) -> None:
    """Print an inclusion proof (JSON) of one event in the signed Merkle tree (RFC 9162) of
    the latest checkpoint, for an auditor to check with 'audit check-proof'."""
    with service(home) as fs:
        proof = fs.audit.prove(seq)
    emit_json(proof)


@audit_app.command("check-proof")
def audit_check_proof(
    proof: Annotated[Path, typer.Argument(help="A proof from 'audit prove' ('-': stdin).")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The exported public key "
                                                                  "(PEM).")],
) -> None:
    """Check an inclusion proof offline (no data directory needed); exit 1 if it fails."""
    from facesearch.governance.audit.verify import check_proof

    text = sys.stdin.read() if str(proof) == "-" else proof.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}") from None
    rec = check_proof(obj, public_key.read_bytes())
    out.print(f"ok: event {rec.seq} ({rec.event.operation} by {rec.event.actor}) is in the "
              f"signed tree of {obj['tree_size']} events", highlight=False, soft_wrap=True)


@audit_app.command("public-key")
def audit_public_key(home: HomeOpt = None) -> None:
    """Print the checkpoint signing key's public half (PEM), for auditors to keep elsewhere."""
    with service(home) as fs:
        pem = fs.audit.public_key()
    sys.stdout.write(pem.decode("ascii"))


keys_app = typer.Typer(no_args_is_help=True, help="Access keys for the HTTP API.")


@keys_app.command("create")
def keys_create(
    role: Annotated[list[str], typer.Option(
        "--role", help="admin, indexer, searcher or auditor; repeat for a key that holds "
                       "several (e.g. an application's --role admin --role indexer --role "
                       "searcher). One role per key keeps separation of duties.")],
    label: Annotated[str | None, typer.Option(help="Who or what holds the key.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Issue the key for one case: its "
                                                     "purpose (with --case).")] = None,
    case: Annotated[str | None, typer.Option(help="Issue the key for one case: its "
                                                  "reference (with --purpose).")] = None,
    expires_in: Annotated[float | None, typer.Option(
        "--expires-in", min=0.001, help="Days until the key expires.")] = None,
    home: HomeOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create an access key; its secret is printed this once only (the audit trail records
    the key and its roles)."""
    with service(home) as fs:
        expires = time.time() + expires_in * 86400 if expires_in else None
        new = fs.keys.create(role, label, purpose=purpose, case_ref=case, expires_at=expires)
    if as_json:
        emit(KeyCreatedOut.of(new))
        return
    out.print(f"access key id: {new.info.key_id}\nsecret:        {new.secret}\n"
              f"roles:         {new.info.role}\n(the secret is shown only now)",
              highlight=False)


@keys_app.command("list")
def keys_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List access keys (never their secrets)."""
    with service(home) as fs:
        keys = fs.keys.list_keys()
    if as_json:
        emit([KeyOut.model_validate(k) for k in keys])
        return
    t = Table("key id", "roles", "label", "created", "revoked")
    for k in keys:
        t.add_row(k.key_id, k.role, k.label or "", ts(k.created_at),
                  ts(k.revoked_at) if k.revoked_at else "")
    out.print(t)


@keys_app.command("revoke")
def keys_revoke(key_id: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke an access key (every server on this data directory refuses it at once)."""
    with service(home) as fs:
        k = fs.keys.revoke(key_id)
    emit(KeyOut.model_validate(k)) if as_json else err.print(f"revoked {k.key_id}")


def erase(
    collection: str,
    home: HomeOpt = None,
    face_id: Annotated[list[str] | None, typer.Option("--face-id", help="Face id (repeat).")] = None,
    external_id: Annotated[str | None, typer.Option(help="Every face with this external "
                                                         "id.")] = None,
    user: Annotated[str | None, typer.Option(help="A user and all its faces.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase faces for good (vectors, metadata, index entries) and print the receipt."""
    with service(home) as fs:
        r = fs.erasure.erase(collection, face_ids=face_id or None, external_id=external_id,
                                 user_id=user)
    if as_json:
        emit(ReceiptOut.model_validate(r))
    else:
        out.print(f"erased {len(r.face_ids)} face(s) from {collection}; receipt {r.receipt_id}")


def retention(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Erase every face older than its collection's retention period, now."""
    with service(home) as fs:
        receipts = fs.erasure.expire()
    if as_json:
        emit(ReceiptsOut(receipts=[ReceiptOut.model_validate(r) for r in receipts]))
    else:
        out.print(f"expired {sum(len(r.face_ids) for r in receipts)} face(s) in "
                  f"{len(receipts)} collection(s)")


def review(
    search_id: str,
    face_id: str,
    decision: Annotated[str, typer.Argument(help="confirmed, rejected or inconclusive")],
    home: HomeOpt = None,
    note: Annotated[str, typer.Option(help="Why.")] = "",
    collection: Annotated[str | None, typer.Option()] = None,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
) -> None:
    """Record an analyst's decision on a search candidate in the audit trail."""
    with service(home) as fs:
        fs.reviews.decide(search_id, face_id, decision, note=note, collection=collection,
                              caller=Caller.local(purpose, case))
    out.print(f"recorded: {decision}")
