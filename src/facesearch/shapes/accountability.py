"""Accountability as shown: erasure receipts, reviews recorded, the audit trail's pages and
its verification."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from facesearch.shapes.base import Out


class ReceiptOut(Out):
    """Proof of an erasure, from a :class:`~facesearch.governance.erasure.ErasureReceipt`."""

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


class ReceiptsOut(Out):
    receipts: list[ReceiptOut]


class ReviewOut(Out):
    recorded: bool


class ProblemOut(Out):
    """What the verification found wrong, from a
    :class:`~facesearch.governance.audit.verify.Problem`."""

    kind: Annotated[str, BeforeValidator(lambda k: getattr(k, "value", k))]
    seq: int
    message: str


class VerifyOut(Out):
    """The audit trail's verification, from a
    :class:`~facesearch.governance.audit.verify.VerifyReport`."""

    ok: bool
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    checkpoints_valid: int
    problems: list[ProblemOut]


class AuditPage(Out):
    events: list[dict[str, Any]] = Field(description="audit events, oldest first (the export "
                                                     "form of ``facesearch audit export``)")
    next_token: str | None = None
