"""Human review: an analyst's decision on a candidate of a search, recorded in the audit trail.

Candidates are leads, never identifications; a review says what a person concluded after
comparing the probe with a candidate. A review must name a search in the audit trail and one
of its candidates, and a caller confined to a case may review only that case's searches.
"""

from __future__ import annotations

import uuid

from facesearch import limits
from facesearch.errors import (
    AccessDeniedError,
    CandidateNotFoundError,
    InvalidParameterError,
    SearchNotFoundError,
)
from facesearch.governance.audit.log import AuditLog
from facesearch.governance.trail import AuditTrail
from facesearch.types import Caller

DECISIONS: tuple[str, ...] = ("confirmed", "rejected", "inconclusive")


class Reviews:
    """Records reviews of searches made on one data directory."""

    def __init__(self, log: AuditLog, trail: AuditTrail) -> None:
        self.log = log
        self.trail = trail

    def decide(self, search_id: str, face_id: str, decision: str, *, note: str = "",
               collection: str | None = None, caller: Caller | None = None) -> str | None:
        """Record ``decision`` on candidate ``face_id`` of search ``search_id``; returns the
        search's collection. Refuses a search that is not in the trail
        (:class:`SearchNotFoundError`), a face that was not one of its candidates
        (:class:`CandidateNotFoundError`), a ``collection`` other than the search's, and a
        search of another case than the caller's (:class:`AccessDeniedError`)."""
        if decision not in DECISIONS:
            raise InvalidParameterError(
                f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        limits.face_id(face_id)
        try:
            sid = str(uuid.UUID(search_id))
        except ValueError:
            raise InvalidParameterError(f"invalid search id {search_id!r}") from None
        if len(note) > limits.MAX_REVIEW_NOTE:
            raise InvalidParameterError(
                f"review note is limited to {limits.MAX_REVIEW_NOTE} characters")
        found = self.log.find_search(sid)
        if found is None:
            raise SearchNotFoundError(f"no search {sid} in the audit trail: review a candidate "
                                      "of a search (its search_id)")
        if caller is not None and caller.case_ref is not None and found.case_ref != caller.case_ref:
            raise AccessDeniedError(f"search {sid} was not made for case {caller.case_ref!r}")
        if collection is not None and collection != found.collection:
            raise InvalidParameterError(f"search {sid} searched collection "
                                        f"{found.collection!r}, not {collection!r}")
        if face_id not in found.candidates:
            raise CandidateNotFoundError(f"face {face_id} is not a candidate of search {sid}")
        self.trail.note("review", caller, collection=found.collection,
                        results=[(face_id, None)],
                        details={"search_id": sid, "decision": decision, "note": note})
        return found.collection
