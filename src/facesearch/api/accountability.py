"""Native routes for accountability: collection policy, erasure, retention, human review,
verifying and exporting the audit trail, and the transparency report. Thin: each calls one
service function."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.native import CallerDep, ErrorOut, native_caller
from facesearch.errors import NotFoundError
from facesearch.governance.erasure import ErasureReceipt
from facesearch.governance.policy import CollectionPolicy
from facesearch.governance.report import public_report
from facesearch.governance.report_render import render
from facesearch.limits import MAX_RESULTS
from facesearch.services.collection import CollectionInfo

router = APIRouter(prefix="/v1", dependencies=[Depends(native_caller)],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403, 404, 429)})


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyIn(BaseModel):
    """A collection's policy; omitted fields take the defaults of the collection's kind."""

    model_config = ConfigDict(extra="forbid")
    law_enforcement: bool = False
    require_purpose: bool | None = None
    threshold_floor: float | None = Field(None, ge=0, le=100)
    max_results_cap: int | None = Field(None, ge=1, le=MAX_RESULTS)
    retention_days: float | None = Field(None, gt=0)
    min_probe_recognisability: float | None = Field(
        None, ge=0, le=100, description="refuse probe faces less recognisable than this "
                                        "(default: 40 for law enforcement, else 0)")


class EffectivePolicyOut(_Out):
    law_enforcement: bool
    require_purpose: bool
    threshold_floor: float
    floor_false_match_rate: float | None = Field(
        description="calibrated false-match rate per comparison at the floor, when known")
    max_results_cap: int
    retention_days: float | None
    min_probe_recognisability: float = Field(
        0.0, description="1:N image searches refuse probe faces less recognisable (0-100)")


class PolicyOut(_Out):
    collection: str
    stated: PolicyIn
    effective: EffectivePolicyOut


def policy_out(info: CollectionInfo) -> PolicyOut:
    p = info.policy
    return PolicyOut(
        collection=info.name, stated=PolicyIn(**info.settings.model_dump()),
        effective=EffectivePolicyOut(
            law_enforcement=p.law_enforcement, require_purpose=p.require_purpose,
            threshold_floor=p.threshold_floor, floor_false_match_rate=p.floor_fmr,
            max_results_cap=p.max_results_cap, retention_days=p.retention_days,
            min_probe_recognisability=p.min_probe_recognisability))


@router.get("/collections/{collection}/policy", name=Operation.GET_POLICY.value)
async def get_policy(request: Request, collection: str) -> PolicyOut:
    """The collection's stated and effective policy."""
    ctx = context(request)
    return policy_out(await ctx.io(lambda: ctx.fs.collections.describe(collection)))


@router.put("/collections/{collection}/policy", name=Operation.SET_POLICY.value)
async def set_policy(request: Request, collection: str, body: PolicyIn,
                     caller: CallerDep) -> PolicyOut:
    """Replace the collection's policy (audited)."""
    ctx = context(request)
    policy = CollectionPolicy(**body.model_dump())
    return policy_out(await ctx.io(
        lambda: ctx.fs.collections.set_policy(collection, policy, caller=caller)))


class EraseIn(BaseModel):
    """Exactly one of: face ids, an external id, a user id (the user goes too)."""

    model_config = ConfigDict(extra="forbid")
    face_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_RESULTS)
    external_id: str | None = None
    user_id: str | None = None


class ReceiptOut(_Out):
    receipt_id: str
    collection: str
    face_ids: list[str]
    images_erased: int
    erased_at: float
    reason: str
    derived_erased: int = Field(0, description="stream snapshots and video results of these "
                                               "faces that went too")
    crops_erased: int = Field(0, description="review crops of these faces that went too")
    vector_copies: str = Field("", description="where copies of the erased vectors outlive "
                                               "the erasure in the vector backend, and until "
                                               "when")


def receipt_out(r: ErasureReceipt) -> ReceiptOut:
    return ReceiptOut(receipt_id=r.receipt_id, collection=r.collection, face_ids=r.face_ids,
                      images_erased=r.images_erased, erased_at=r.erased_at, reason=r.reason,
                      derived_erased=r.derived_erased, crops_erased=r.crops_erased,
                      vector_copies=r.vector_copies)


@router.post("/collections/{collection}/erase", name=Operation.ERASE_FACES.value)
async def erase(request: Request, collection: str, body: EraseIn,
                caller: CallerDep) -> ReceiptOut:
    """Erase faces for good and return the erasure receipt (audited)."""
    ctx = context(request)
    return receipt_out(await ctx.io(lambda: ctx.fs.erasure.erase(
        collection, face_ids=body.face_ids, external_id=body.external_id,
        user_id=body.user_id, caller=caller)))


class ReceiptsOut(_Out):
    receipts: list[ReceiptOut]


@router.post("/retention/run", name=Operation.RUN_RETENTION.value)
async def run_retention(request: Request) -> ReceiptsOut:
    """Erase every face older than its collection's retention period, now."""
    ctx = context(request)
    receipts = await ctx.io(ctx.fs.erasure.expire)
    return ReceiptsOut(receipts=[receipt_out(r) for r in receipts])


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    search_id: str = Field(description="the search_id of the search whose candidate this is")
    face_id: str
    decision: Literal["confirmed", "rejected", "inconclusive"]
    note: str = Field("", max_length=4000)
    collection: str | None = None


class ReviewOut(_Out):
    recorded: bool


@router.post("/reviews", name=Operation.REVIEW_CANDIDATE.value, status_code=201)
async def review(request: Request, body: ReviewIn, caller: CallerDep) -> ReviewOut:
    """Record an analyst's decision on a candidate of a search (named by the search's
    ``search_id``; the face must be one of its candidates) in the audit trail."""
    ctx = context(request)

    await ctx.io(lambda: ctx.fs.reviews.record(body.search_id, body.face_id, body.decision,
                                               note=body.note, collection=body.collection,
                                               caller=caller))
    return ReviewOut(recorded=True)


class ProblemOut(_Out):
    kind: str
    seq: int
    message: str


class VerifyOut(_Out):
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    checkpoints_valid: int
    problems: list[ProblemOut]


@router.get("/audit/verify", name=Operation.VERIFY_AUDIT.value)
async def verify_audit(request: Request) -> VerifyOut:
    """Check the audit trail's hash chain and signed checkpoints; lists every problem found."""
    ctx = context(request)
    r = await ctx.io(ctx.fs.audit.verify)
    return VerifyOut(ok=r.ok, events=r.events, head_seq=r.head_seq, head_hash=r.head_hash,
                     checkpoints=r.checkpoints, checkpoints_valid=r.checkpoints_valid,
                     problems=[ProblemOut(kind=p.kind.value, seq=p.seq, message=p.message)
                               for p in r.problems])


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

class RiskOut(_Out):
    similarity: float
    false_match_rate: float = Field(description="1:1: fraction of different-person pairs at or "
                                                "above the threshold")
    false_non_match_rate: float = Field(description="1:1: fraction of same-person pairs below")
    gallery_size: int | None
    expected_fpir: float | None = Field(description="expected fraction of searches for someone "
                                                    "not enrolled that return a candidate")
    extrapolated: bool = Field(description="the FMR is below what the calibration data "
                                           "measures and comes from a fitted tail")
    measured_with: str


class AnswerOut(_Out):
    target_fpir: float
    gallery_size: int
    required_fmr: float
    threshold: RiskOut
    note: str


def risk_out(r: Any) -> RiskOut:
    return RiskOut(similarity=r.similarity, false_match_rate=r.false_match_rate,
                   false_non_match_rate=r.false_non_match_rate, gallery_size=r.gallery_size,
                   expected_fpir=r.expected_fpir, extrapolated=r.extrapolated,
                   measured_with=r.measured_with)


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
) -> RiskOut:
    """The false-match rate of a threshold, and the expected false-positive identification
    rate for a gallery (given, or a collection's current size)."""
    ctx = context(request)
    if collection is not None:
        gallery_size = max(1, (await ctx.io(
            lambda: ctx.fs.collections.describe(collection))).face_count)
    return risk_out(_calibration(request).risk(similarity, gallery_size))


@router.get("/calibration/threshold", name=Operation.THRESHOLD_FOR_FPIR.value)
async def threshold_for_fpir(
    request: Request, fpir: Annotated[float, Query(gt=0, lt=1)],
    gallery_size: Annotated[int, Query(ge=1)],
) -> AnswerOut:
    """Which threshold gives an expected FPIR at most ``fpir`` on a gallery of this size?"""
    a = _calibration(request).answer(fpir, gallery_size)
    return AnswerOut(target_fpir=a.target_fpir, gallery_size=a.gallery_size,
                     required_fmr=a.required_fmr, threshold=risk_out(a.risk), note=a.note)
