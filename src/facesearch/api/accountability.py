"""Native routes for accountability: collection policy, erasure, retention, human review,
listing, verifying and exporting the audit trail, and the transparency report. Thin: each calls one
service function."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.native import CallerDep, native_router
from facesearch.api.paging import decode_row, encode_token
from facesearch.errors import NotFoundError
from facesearch.governance.policy import CollectionPolicy
from facesearch.governance.report import public_report
from facesearch.governance.report_render import render
from facesearch.limits import MAX_RESULTS
from facesearch.shapes.accountability import (
    AuditPage,
    ReceiptOut,
    ReceiptsOut,
    ReviewOut,
    VerifyOut,
)
from facesearch.shapes.base import ErrorOut
from facesearch.shapes.collections import PolicyIn, PolicyOut
from facesearch.shapes.search import AnswerOut, ThresholdRiskOut

router = native_router((400, 401, 403, 404, 429))


@router.get("/collections/{collection}/policy", name=Operation.GET_POLICY.value)
async def get_policy(request: Request, collection: str) -> PolicyOut:
    """The collection's stated and effective policy."""
    ctx = context(request)
    return PolicyOut.model_validate(await ctx.io(lambda: ctx.fs.collections.describe(collection)))


@router.put("/collections/{collection}/policy", name=Operation.SET_POLICY.value)
async def set_policy(request: Request, collection: str, body: PolicyIn,
                     caller: CallerDep) -> PolicyOut:
    """Replace the collection's policy (audited)."""
    ctx = context(request)
    policy = CollectionPolicy(**body.model_dump())
    return PolicyOut.model_validate(await ctx.io(
        lambda: ctx.fs.collections.set_policy(collection, policy, caller=caller)))


class EraseIn(BaseModel):
    """Exactly one of: face ids, an external id, a user id (the user goes too)."""

    model_config = ConfigDict(extra="forbid")
    face_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_RESULTS)
    external_id: str | None = None
    user_id: str | None = None


@router.post("/collections/{collection}/erase", name=Operation.ERASE_FACES.value)
async def erase(request: Request, collection: str, body: EraseIn,
                caller: CallerDep) -> ReceiptOut:
    """Erase faces for good and return the erasure receipt (audited)."""
    ctx = context(request)
    return ReceiptOut.model_validate(await ctx.io(lambda: ctx.fs.erasure.erase(
        collection, face_ids=body.face_ids, external_id=body.external_id,
        user_id=body.user_id, caller=caller)))


@router.post("/retention/run", name=Operation.RUN_RETENTION.value)
async def run_retention(request: Request) -> ReceiptsOut:
    """Erase every face older than its collection's retention period, now."""
    ctx = context(request)
    receipts = await ctx.io(ctx.fs.erasure.expire)
    return ReceiptsOut(receipts=[ReceiptOut.model_validate(r) for r in receipts])


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    search_id: str = Field(description="the search_id of the search whose candidate this is")
    face_id: str
    decision: Literal["confirmed", "rejected", "inconclusive"]
    note: str = Field("", max_length=4000)
    collection: str | None = None


@router.post("/reviews", name=Operation.REVIEW_CANDIDATE.value, status_code=201)
async def review(request: Request, body: ReviewIn, caller: CallerDep) -> ReviewOut:
    """Record an analyst's decision on a candidate of a search (named by the search's
    ``search_id``; the face must be one of its candidates) in the audit trail."""
    ctx = context(request)

    await ctx.io(lambda: ctx.fs.reviews.decide(body.search_id, body.face_id, body.decision,
                                               note=body.note, collection=body.collection,
                                               caller=caller))
    return ReviewOut(recorded=True)


@router.get("/audit", name=Operation.LIST_AUDIT_EVENTS.value,
            responses={s: {"model": ErrorOut} for s in (409, 413, 422, 503)})
async def list_audit_events(
    request: Request, actor: str | None = None, case: str | None = None,
    collection: str | None = None,
    operation: Annotated[str | None, Query(description="exact, or a prefix ending in '*'")] = None,
    since: Annotated[float | None, Query(description="seconds since the epoch")] = None,
    until: float | None = None, max_results: Annotated[int, Query(ge=1, le=10_000)] = 100,
    next_token: str | None = None, purpose: str | None = None,
    search_id: Annotated[str | None, Query(description="the search and its reviews")] = None,
    *, caller: CallerDep,
) -> AuditPage:
    """Audit events matching every filter given, a page at a time (auditors only; a key
    bound to a case reads that case's events only)."""
    ctx = context(request)
    after = decode_row("audit", next_token)
    records, nxt = await ctx.io(lambda: ctx.fs.audit.query(
        actor=actor, case_ref=case, collection=collection, operation=operation, since=since,
        until=until, limit=max_results, after_seq=after, purpose=purpose,
        search_id=search_id, bound_case=ctx.fs.keys.case_of(caller)))
    return AuditPage(events=[r.to_json() for r in records],
                     next_token=None if nxt is None else encode_token("audit", nxt))


@router.get("/audit/verify", name=Operation.VERIFY_AUDIT.value)
async def verify_audit(request: Request) -> VerifyOut:
    """Check the audit trail's hash chain and signed checkpoints; lists every problem found."""
    ctx = context(request)
    r = await ctx.io(ctx.fs.audit.verify)
    return VerifyOut.model_validate(r)


@router.get("/audit/export", name=Operation.EXPORT_AUDIT.value,
            response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}})
async def export_audit(
    request: Request, format: Literal["jsonl", "csv"] = "jsonl",  # noqa: A002
    actor: str | None = None, case: str | None = None, collection: str | None = None,
    operation: str | None = None,
    since: Annotated[float | None, Query(description="seconds since the epoch")] = None,
    until: float | None = None, purpose: str | None = None, *, caller: CallerDep,
) -> Response:
    """The audit events matching every filter given, as JSON lines or CSV (a key bound to a
    case: that case's only)."""
    ctx = context(request)
    buf = io.StringIO()
    await ctx.io(lambda: ctx.fs.audit.export(format, buf, actor=actor, case_ref=case,
                                             collection=collection, operation=operation,
                                             since=since, until=until, purpose=purpose,
                                             bound_case=ctx.fs.keys.case_of(caller)))
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return Response(buf.getvalue(), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="facesearch-audit.{format}"'})


REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
              "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""The HTML report is a document with inline style and SVG only: nothing runs or loads."""


@router.get("/audit/report", name=Operation.GET_TRANSPARENCY_REPORT.value,
            response_class=Response,
            responses={200: {"content": {"application/json": {}, "text/html": {},
                                         "application/pdf": {}}}})
async def transparency_report(
    request: Request,
    start: Annotated[float, Query(alias="from", description="period start, seconds since the "
                                                            "epoch (included)")],
    end: Annotated[float, Query(alias="to", description="period end, seconds since the epoch "
                                                        "(excluded)")],
    format: Literal["json", "html", "pdf"] = "json",  # noqa: A002
) -> Response:
    """The transparency report of a period, in aggregates (no faces, case references, probe
    hashes or key ids): searches by kind, purpose and collection, refusals by rule,
    candidates returned and their review outcomes, live-stream matches, erasures, keys
    issued and revoked; as JSON, or as HTML or PDF for an oversight body."""
    ctx = context(request)
    report = await ctx.io(lambda: public_report(
        ctx.fs.audit, start, end, purposes=ctx.fs.settings.report_purposes.split(","),
        min_count=ctx.fs.settings.report_min_count))
    body, media = await ctx.io(lambda: render(report, format))
    headers = {"Cache-Control": "no-store"}
    if format != "json":
        headers["Content-Disposition"] = (f'attachment; filename="facesearch-transparency-'
                                          f'report.{format}"')
    if format == "html":
        headers["Content-Security-Policy"] = REPORT_CSP
    return Response(body, media_type=media, headers=headers)


# -- what a threshold means -----------------------------------------------------------------

def _calibration(request: Request) -> Any:
    cal = context(request).fs.calibration()
    if cal is None:
        raise NotFoundError("no calibration ships for this server's face model")
    return cal


@router.get("/calibration/risk", name=Operation.THRESHOLD_RISK.value)
async def threshold_risk(
    request: Request, similarity: Annotated[float, Query(ge=0, le=100)],
    gallery_size: Annotated[int | None, Query(ge=1)] = None,
    collection: Annotated[str | None, Query(description="use this collection's size")] = None,
) -> ThresholdRiskOut:
    """The false-match rate of a threshold, and the expected false-positive identification
    rate for a gallery (given, or a collection's current size)."""
    ctx = context(request)
    if collection is not None:
        gallery_size = max(1, (await ctx.io(
            lambda: ctx.fs.collections.describe(collection))).face_count)
    return ThresholdRiskOut.model_validate(_calibration(request).risk(similarity, gallery_size))


@router.get("/calibration/threshold", name=Operation.THRESHOLD_FOR_FPIR.value)
async def threshold_for_fpir(
    request: Request, fpir: Annotated[float, Query(gt=0, lt=1)],
    gallery_size: Annotated[int, Query(ge=1)],
) -> AnswerOut:
    """Which threshold gives an expected FPIR at most ``fpir`` on a gallery of this size?"""
    return AnswerOut.model_validate(_calibration(request).answer(fpir, gallery_size))
