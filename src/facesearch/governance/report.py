"""The transparency report: what the service did in a period, in aggregates, for the public.

Public-oversight rules for police face recognition ask an agency to publish how often it
searched and why, how often searches were refused, what they returned, what the people
reviewing the candidates concluded, what live cameras matched, what was erased, and who got
access. :func:`build_report` reads the audit trail
(:class:`~facesearch.governance.audit.log.AuditLog`) for a period (``start <= ts < end``,
seconds since the epoch) and counts;
:mod:`facesearch.governance.report_render` lays the numbers out with charts (HTML, PDF) for an
oversight body.

Aggregates only: the report names collections, stated purposes and key roles, never a face
(no face or image id, no photo), a case reference, a probe hash, an access key id or a note.

Definitions (each stated in the report too):

- a *search* is one audited 1:N search made by a person (by photo, by stored face, of users),
  or one stored-video job (however many batches it searched in); refused searches are not
  searches but *refusals*, grouped by the policy rule that refused them;
- *candidates returned* counts candidate faces per search (a face returned twice by one search
  counts once); *review outcomes* give each candidate the latest decision recorded on it up to
  the report's creation (confirmed, rejected, inconclusive), or *never reviewed*;
- live streams are counted apart: *searches* are the processors' searches of frames (several
  per person in view), *matches* the candidates those searches returned;
- erasures count faces erased by reason (on request, deleted by an indexer, expired by
  retention, with a deleted collection); keys count keys issued and revoked by role.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from facesearch.errors import InvalidParameterError
from facesearch.governance.audit.event import AuditRecord
from facesearch.governance.audit.log import AuditLog

REVIEW_OUTCOMES = ("confirmed", "rejected", "inconclusive", "never reviewed")

SEARCH_KINDS = {
    "search.image": "by photo",
    "search.face": "by stored face",
    "users.search": "users, by face or user",
    "users.search.image": "users, by photo",
    "search.video": "stored video (jobs)",
}
"""Audited operations counted as searches, and how the report names them."""

ERASURE_REASONS = {
    "faces.erase": "erased on request",
    "faces.delete": "deleted by an indexer",
    "faces.expire": "expired (retention period)",
    "collection.delete": "with a deleted collection",
}

REFUSAL_RULES = (
    ("requires a purpose", "purpose and case reference missing"),
    ("below this collection's floor", "threshold below the collection's floor"),
    ("exceeds this collection's cap", "more candidates asked than the collection allows"),
    ("rate limit", "search rate limit reached"),
    ("quality filter", "probe face below the quality filter"),
    ("was asked for, but the probe has", "chosen probe face not found"),
)
"""Refusal reasons (a phrase of the refusal's text) and the rule the report names."""

NO_PURPOSE = "(none stated)"

NOTES = (
    ("A search is one 1:N search made by a person, or one stored-video job; refused searches "
     "are counted as refusals, by the policy rule that refused them."),
    ("Candidates are leads for human review, never identifications. Each candidate returned "
     "counts once per search, with the latest review decision recorded on it when this report "
     "was made."),
    ("Live streams: searches are the processors' searches of video frames (a person in view "
     "may be searched several times); matches are the candidates they returned. A live match "
     "is reviewed once per watchlist face and processor run (from its start to its stop)."),
    ("Aggregates only: this report shows no face, photo, case reference, probe hash, access "
     "key or review note."),
)
"""How to read the report (printed with it)."""
_PAGE = 5000


class Tally(BaseModel):
    """One bar of a chart: a label and its count."""

    model_config = ConfigDict(extra="forbid")
    label: str
    count: int


class TransparencyReport(BaseModel):
    """The report's numbers (see the module's docstring for what each counts)."""

    model_config = ConfigDict(extra="forbid")
    title: str = "facesearch transparency report"
    period_start: float = Field(description="seconds since the epoch (included)")
    period_end: float = Field(description="seconds since the epoch (excluded)")
    generated_at: float
    audit_events: int = Field(description="audit events in the period")
    audit_chain_ok: bool = Field(description="the audit trail verified intact when the "
                                             "report was made")
    searches: int
    searches_by_kind: list[Tally]
    searches_by_purpose: list[Tally]
    searches_by_collection: list[Tally]
    refusals: int
    refusals_by_reason: list[Tally]
    candidates_returned: int
    searches_with_candidates: int
    searches_without_candidates: int
    review_outcomes: list[Tally] = Field(description="per candidate returned: "
                                                     + ", ".join(REVIEW_OUTCOMES))
    stream_searches: int
    stream_matches: int
    stream_matches_by_collection: list[Tally]
    stream_review_outcomes: list[Tally] = Field(
        default_factory=list,
        description="per live-stream match (a watchlist face matched while a stream processor "
                    "ran, once per run): " + ", ".join(REVIEW_OUTCOMES))
    faces_erased: int
    faces_erased_by_reason: list[Tally]
    erasure_requests: int = Field(description="erasures asked for (events), all reasons")
    retention_runs_with_erasures: int
    keys_issued_by_role: list[Tally]
    keys_revoked_by_role: list[Tally]
    policy_changes: int
    volume_alerts: int
    notes: list[str]


def _tallies(c: Counter[str], order: Sequence[str] | None = None) -> list[Tally]:
    if order is not None:
        return [Tally(label=k, count=c.get(k, 0)) for k in order]
    return [Tally(label=k, count=v) for k, v in sorted(c.items(), key=lambda kv: (-kv[1],
                                                                                  kv[0]))]


def _records(log: AuditLog, **filters: Any) -> Iterator[AuditRecord]:
    cursor = 0
    while True:
        page, nxt = log.query(limit=_PAGE, after_seq=cursor, **filters)
        yield from page
        if nxt is None:
            return
        cursor = nxt


def refusal_rule(reason: object) -> str:
    """The policy rule a refusal's text names (``other`` when none)."""
    text = str(reason or "")
    for phrase, rule in REFUSAL_RULES:
        if phrase in text:
            return rule
    return "other"


def _int(v: object) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def build_report(log: AuditLog, start: float, end: float, *,
                 now: float | None = None, verify: bool = True) -> TransparencyReport:
    """Count the audit trail's events of ``start <= ts < end`` (seconds since the epoch).
    Reviews are counted up to ``now`` (default: the time of the call), also after ``end``.
    ``verify`` checks the audit chain first and says whether it was intact."""
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise InvalidParameterError("a report's period must end after it starts")
    now = time.time() if now is None else now
    events = 0
    by_kind: Counter[str] = Counter()
    by_purpose: Counter[str] = Counter()
    by_collection: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    stream_by_collection: Counter[str] = Counter()
    erased: Counter[str] = Counter()
    issued: Counter[str] = Counter()
    revoked: Counter[str] = Counter()
    stream_searches = erasure_requests = retention_runs = policy_changes = alerts = 0
    # candidates per search (video jobs: over all their batches)
    candidates: dict[str, set[str]] = {}
    video_jobs: set[str] = set()
    # live matches per stream processor run (its searches share one search id)
    stream_candidates: dict[str, set[str]] = {}
    for rec in _records(log, since=start, until=end):
        events += 1
        e = rec.event
        op = e.operation
        if op in SEARCH_KINDS:
            search_id = str(e.details.get("search_id") or f"seq-{rec.seq}")
            faces = candidates.setdefault(search_id, set())
            faces.update(f for f, _ in e.results)
            if op == "search.video":
                if search_id in video_jobs:
                    continue  # another batch of a job already counted
                video_jobs.add(search_id)
            by_kind[SEARCH_KINDS[op]] += 1
            by_purpose[e.purpose or NO_PURPOSE] += 1
            by_collection[e.collection or "(none)"] += 1
        elif op == "search.stream":
            stream_searches += 1
            stream_by_collection[e.collection or "(none)"] += len(e.results)
            run = str(e.details.get("search_id") or f"seq-{rec.seq}")
            stream_candidates.setdefault(run, set()).update(f for f, _ in e.results)
        elif op == "search.refused":
            refusals[refusal_rule(e.details.get("reason"))] += 1
        elif op in ERASURE_REASONS:
            erasure_requests += 1
            n = _int(e.details.get("faces_erased" if op == "collection.delete" else "faces"))
            erased[ERASURE_REASONS[op]] += n
            if op == "faces.expire" and n:
                retention_runs += 1
        elif op == "key.create":
            issued[str(e.details.get("key_role") or "unknown")] += 1
        elif op == "key.revoke":
            revoked[str(e.details.get("key_role") or "unknown")] += 1
        elif op == "policy.set":
            policy_changes += 1
        elif op == "alert.volume_spike":
            alerts += 1
    decisions: dict[tuple[str, str], str] = {}
    for rec in _records(log, operation="review", since=start, until=now + 1e-6):
        sid = rec.event.details.get("search_id")
        decision = rec.event.details.get("decision")
        if (isinstance(sid, str) and (sid in candidates or sid in stream_candidates)
                and isinstance(decision, str)):
            for face_id, _ in rec.event.results:
                decisions[(sid, face_id)] = decision  # the latest decision wins
    outcomes: Counter[str] = Counter()
    for sid, faces in candidates.items():
        for face_id in faces:
            outcomes[decisions.get((sid, face_id), "never reviewed")] += 1
    stream_outcomes: Counter[str] = Counter()
    for sid, faces in stream_candidates.items():
        for face_id in faces:
            stream_outcomes[decisions.get((sid, face_id), "never reviewed")] += 1
    with_candidates = sum(1 for faces in candidates.values() if faces)
    chain_ok = log.verify().ok if verify else True
    roles = ("admin", "indexer", "searcher", "auditor")
    key_order = [*roles, *sorted((set(issued) | set(revoked)) - set(roles))]
    return TransparencyReport(
        period_start=start, period_end=end, generated_at=now, audit_events=events,
        audit_chain_ok=chain_ok,
        searches=sum(by_kind.values()),
        searches_by_kind=_tallies(by_kind, list(dict.fromkeys(SEARCH_KINDS.values()))),
        searches_by_purpose=_tallies(by_purpose),
        searches_by_collection=_tallies(by_collection),
        refusals=sum(refusals.values()),
        refusals_by_reason=_tallies(refusals),
        candidates_returned=sum(len(f) for f in candidates.values()),
        searches_with_candidates=with_candidates,
        searches_without_candidates=len(candidates) - with_candidates,
        review_outcomes=_tallies(outcomes, REVIEW_OUTCOMES),
        stream_searches=stream_searches,
        stream_matches=sum(stream_by_collection.values()),
        stream_matches_by_collection=_tallies(stream_by_collection),
        stream_review_outcomes=_tallies(stream_outcomes, REVIEW_OUTCOMES),
        faces_erased=sum(erased.values()),
        faces_erased_by_reason=_tallies(erased, list(ERASURE_REASONS.values())),
        erasure_requests=erasure_requests, retention_runs_with_erasures=retention_runs,
        keys_issued_by_role=_tallies(issued, key_order),
        keys_revoked_by_role=_tallies(revoked, key_order),
        policy_changes=policy_changes, volume_alerts=alerts,
        notes=list(NOTES))


# -- publishing ---------------------------------------------------------------------------------

NOT_LISTED = "(not on the published list of purposes)"
"""The row that counts every stated purpose the operator's list does not name."""


def _small_combined(rows: list[Tally], min_count: int, keep: Sequence[str] = ()) -> list[Tally]:
    """``rows`` with those under ``min_count`` (other than ``keep``) combined into one row,
    itself left out when its total is under ``min_count`` too."""
    big = [t for t in rows if t.count >= min_count or t.label in keep]
    small = sum(t.count for t in rows if t.count < min_count and t.label not in keep)
    if small >= min_count:
        big.append(Tally(label=f"(groups of fewer than {min_count}, combined)", count=small))
    return big


def publishable(r: TransparencyReport, purposes: Sequence[str], min_count: int
                ) -> TransparencyReport:
    """``r`` fit to publish: a stated purpose is named only when it is on the operator's
    list ``purposes`` (matched without regard to case; free text such as "Suspect Jane Doe,
    case REF-2026-0042" never is: it is counted under :data:`NOT_LISTED`), and in the
    breakdowns by purpose, collection and watchlist a group smaller than ``min_count`` is
    combined with the other small ones (left out when even combined they are fewer). The
    totals are untouched."""
    listed = {p.strip().lower(): p.strip() for p in purposes if p.strip()}
    by_purpose: Counter[str] = Counter()
    for t in r.searches_by_purpose:
        label = t.label if t.label == NO_PURPOSE else listed.get(t.label.strip().lower(),
                                                                  NOT_LISTED)
        by_purpose[label] += t.count
    return r.model_copy(update={
        "searches_by_purpose": _small_combined(_tallies(by_purpose), min_count),
        "searches_by_collection": _small_combined(r.searches_by_collection, min_count),
        "stream_matches_by_collection": _small_combined(r.stream_matches_by_collection,
                                                        min_count),
        "notes": [*r.notes, (
            f"Purposes are named only when on the operator's published list; groups of fewer "
            f"than {min_count} searches or matches are combined, or left out when even "
            "combined they are fewer.")]})


def public_report(log: AuditLog, start: float, end: float, *, purposes: Sequence[str],
                  min_count: int) -> TransparencyReport:
    """:func:`build_report` made :func:`publishable`: what the API and the CLI give out."""
    return publishable(build_report(log, start, end), purposes, min_count)
