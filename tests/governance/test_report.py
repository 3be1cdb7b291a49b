"""The transparency report: a period's searches, refusals, candidates and their review
outcomes, live-stream matches, erasures and keys, counted from the audit trail; as JSON, HTML
(escaped, self-contained) and PDF; aggregates only (no face, case reference, probe hash, key
id or note)."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.errors import InvalidParameterError
from facesearch.governance.audit.event import AuditEvent
from facesearch.governance.policy import CollectionPolicy
from facesearch.governance.report import TransparencyReport, build_report, refusal_rule
from facesearch.governance.report_render import headline, render, render_html
from facesearch.service import FaceSearch
from facesearch.types import Caller

from ..conftest import face

CASE = "C-2026-SECRET-77"
NOTE = "private analyst note about the ear"
HOSTILE = 'theft <script>alert("x")</script> & "fraud"'


def tally(rows: list, label: str) -> int:  # type: ignore[type-arg]
    return next((t.count for t in rows if t.label == label), 0)


@pytest.fixture
def busy(fs: FaceSearch) -> dict[str, object]:
    """A period's worth of activity: searches with purposes and cases, refusals, reviews, a
    live-stream search, an erasure, keys issued and revoked."""
    fs.collections.create("people")
    fs.collections.create("watch", policy=CollectionPolicy(law_enforcement=True))
    ids = {n: fs.collections.index_image("people", face(f"{n}.jpg"), external_id=n)
           .indexed[0].face_id for n in ("obama", "biden")}
    fs.collections.index_image("watch", face("obama.jpg"))
    analyst = Caller("FSAKANALYSTREPORT0000", role="searcher", purpose="burglary",
                     case_ref=CASE)
    hostile = Caller("FSAKANALYSTREPORT0000", role="searcher", purpose=HOSTILE, case_ref=CASE)
    start = time.time() - 1
    a = fs.search.by_image("people", face("obama2.jpg"), threshold=50, caller=analyst)
    b = fs.search.by_image("people", face("obama2.jpg"), threshold=50, caller=hostile)
    fs.search.by_image("people", face("obama2.jpg"), threshold=99.99, caller=analyst)  # none
    # a: obama confirmed, then biden rejected then changed to inconclusive; b: not reviewed
    assert {m.face.face_id for m in a.matches} >= {ids["obama"]}
    fs.reviews.decide(a.search_id, ids["obama"], "confirmed", note=NOTE, caller=analyst)
    if ids["biden"] in {m.face.face_id for m in a.matches}:
        fs.reviews.decide(a.search_id, ids["biden"], "rejected", caller=analyst)
        fs.reviews.decide(a.search_id, ids["biden"], "inconclusive", caller=analyst)
    # refusals: no purpose on a law-enforcement collection, a threshold under its floor
    with pytest.raises(InvalidParameterError):
        fs.search.by_image("watch", face("obama2.jpg"), caller=Caller("FSAKX", role="searcher"))
    with pytest.raises(InvalidParameterError):
        fs.search.by_image("watch", face("obama2.jpg"), threshold=10, caller=analyst)
    # a live stream's search of a frame
    vec = fs.search.face_vector("watch", fs.collections.list_faces("watch")[0][0].face_id)
    fs.search.by_vectors("watch", np.asarray(vec), operation="search.stream",
                         caller=analyst, rate_limit=False)
    new = fs.keys.create("searcher", "report test")
    fs.keys.revoke(new.info.key_id)
    receipt = fs.erasure.erase("people", external_id="biden")
    end = time.time() + 1
    return {"start": start, "end": end, "a": a, "b": b, "key": new.info.key_id,
            "ids": ids, "receipt": receipt, "probe": hashlib.sha256(
                face("obama2.jpg").read_bytes()).hexdigest()}


def test_report_counts_the_period(fs: FaceSearch, busy: dict[str, object]) -> None:
    r = build_report(fs.audit, float(busy["start"]), float(busy["end"]))  # type: ignore[arg-type]
    assert r.audit_chain_ok
    assert r.searches == 3 and tally(r.searches_by_kind, "by photo") == 3
    assert tally(r.searches_by_purpose, "burglary") == 2
    assert tally(r.searches_by_purpose, HOSTILE) == 1
    assert tally(r.searches_by_collection, "people") == 3
    assert r.refusals == 2
    assert tally(r.refusals_by_reason, "purpose and case reference missing") == 1
    assert tally(r.refusals_by_reason, "threshold below the collection's floor") == 1
    a, b = busy["a"], busy["b"]
    returned = len(a.matches) + len(b.matches)  # type: ignore[attr-defined]
    assert r.candidates_returned == returned
    assert (r.searches_with_candidates, r.searches_without_candidates) == (2, 1)
    outcomes = {t.label: t.count for t in r.review_outcomes}
    assert list(outcomes) == ["confirmed", "rejected", "inconclusive", "never reviewed"]
    assert outcomes["confirmed"] == 1 and outcomes["rejected"] == 0  # the latest decision wins
    assert sum(outcomes.values()) == returned
    assert outcomes["never reviewed"] == returned - 1 - outcomes["inconclusive"]
    assert r.stream_searches == 1 and r.stream_matches == 1
    assert tally(r.stream_matches_by_collection, "watch") == 1
    assert r.faces_erased == 1 and tally(r.faces_erased_by_reason, "erased on request") == 1
    assert tally(r.keys_issued_by_role, "searcher") == 1
    assert tally(r.keys_revoked_by_role, "searcher") == 1

    # Another period counts nothing of it.
    before = build_report(fs.audit, float(busy["start"]) - 7200,  # type: ignore[arg-type]
                          float(busy["start"]) - 3600)  # type: ignore[arg-type]
    assert (before.searches, before.refusals, before.audit_events) == (0, 0, 0)
    with pytest.raises(InvalidParameterError):
        build_report(fs.audit, 10.0, 5.0)


def test_report_shows_aggregates_only(fs: FaceSearch, busy: dict[str, object]) -> None:
    r = build_report(fs.audit, float(busy["start"]), float(busy["end"]))  # type: ignore[arg-type]
    secrets = [CASE, NOTE, str(busy["probe"]), str(busy["key"]), "FSAKANALYSTREPORT",
               *busy["ids"].values(), busy["a"].search_id,  # type: ignore[attr-defined]
               busy["receipt"].receipt_id]  # type: ignore[attr-defined]
    as_json = render(r, "json")[0].decode()
    page = render_html(r)
    for secret in secrets:
        assert secret not in as_json and secret not in page, secret
    # No field of the report can hold them either: counts, labels (purposes, collections,
    # roles, rules) and fixed notes only.
    assert set(TransparencyReport.model_fields) >= {"searches_by_purpose", "review_outcomes"}
    assert not re.search(r"[0-9a-f]{64}", as_json)  # no hash of any kind
    pdf, media = render(r, "pdf")
    assert media == "application/pdf" and pdf.startswith(b"%PDF") and len(pdf) > 5000
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(
        b"/Type/Page") >= 3  # the key figures, then the charts


def test_report_html_is_escaped_and_self_contained(fs: FaceSearch,
                                                   busy: dict[str, object]) -> None:
    r = build_report(fs.audit, float(busy["start"]), float(busy["end"]))  # type: ignore[arg-type]
    page = render_html(r)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") \
        and "https://" not in page
    assert "<svg" in page and "Searches by stated purpose" in page
    assert "Refused searches by rule" in page and "Review outcomes" in page


def test_refusal_rules() -> None:
    assert refusal_rule("this collection's policy requires a purpose and a case reference") \
        == "purpose and case reference missing"
    assert refusal_rule("search rate limit of 60 per minute reached for X") \
        == "search rate limit reached"
    assert refusal_rule(None) == "other"


def test_reviews_of_video_batches_and_live_matches_are_counted(fs: FaceSearch) -> None:
    """A video job records one search per batch under the job's id, a stream processor one
    per searched frame under its run's id: a candidate of any batch may be reviewed (not only
    the first batch's), and the report counts video reviews with the candidates and live
    reviews in their own outcomes."""
    import uuid

    fs.collections.create("people")
    ids = {n: fs.collections.index_image("people", face(f"{n}.jpg"), external_id=n)
           .indexed[0].face_id for n in ("obama", "biden")}
    vec = {n: fs.search.face_vector("people", f) for n, f in ids.items()}
    analyst = Caller("FSAKANALYSTVIDEO00000", role="searcher")
    start = time.time() - 1
    job, run = str(uuid.uuid4()), str(uuid.uuid4())
    for n in ("obama", "biden"):  # two batches of one job, two frames of one run
        fs.search.by_vectors("people", vec[n], operation="search.video", threshold=95,
                             caller=analyst, search_id=job)
        fs.search.by_vectors("people", vec[n], operation="search.stream", threshold=95,
                             caller=analyst, search_id=run)
    fs.reviews.decide(job, ids["biden"], "confirmed", caller=analyst)  # the second batch's
    fs.reviews.decide(run, ids["obama"], "rejected", caller=analyst)
    fs.reviews.decide(run, ids["biden"], "inconclusive", caller=analyst)
    r = build_report(fs.audit, start, time.time() + 1)
    assert tally(r.searches_by_kind, "stored video (jobs)") == 1 and r.candidates_returned == 2
    assert tally(r.review_outcomes, "confirmed") == 1
    assert tally(r.review_outcomes, "never reviewed") == 1
    assert r.stream_searches == 2 and r.stream_matches == 2
    assert {t.label: t.count for t in r.stream_review_outcomes} == {
        "confirmed": 0, "rejected": 1, "inconclusive": 1, "never reviewed": 0}
    assert ("Live matches reviewed", "2 of 2") in headline(r)


def test_published_purposes_come_from_the_operators_list(home: Path) -> None:
    """Issue 26: the report published free-text purposes verbatim ("Suspect Jane Doe, case
    REF-2026-0042"), and groups of one."""
    from facesearch.governance.report import NOT_LISTED, public_report

    with FaceSearch(Settings(home=home)) as fs:
        for purpose, case, n in (("Fraud investigation", "C-1", 6),
                                 ("Suspect Jane Doe, case REF-2026-0042", "C-2", 6),
                                 ("missing person", "C-3", 2), ("Trafficking", "C-4", 1)):
            for _ in range(n):
                fs.audit.append(AuditEvent(operation="search.face", actor="FSAKX",
                                           role="searcher", purpose=purpose, case_ref=case,
                                           collection="watch"))
        fs.audit.append(AuditEvent(operation="search.face", actor="FSAKX", role="searcher",
                                   collection="rare"))
        r = public_report(fs.audit, 0, 4e9, purposes=["fraud investigation", "Missing person",
                                                      "Trafficking"], min_count=3)
    rows = {t.label: t.count for t in r.searches_by_purpose}
    assert rows == {"fraud investigation": 6, NOT_LISTED: 6,  # the list's spelling
                    "(groups of fewer than 3, combined)": 4}  # missing person 2, Trafficking 1,
    # no purpose 1: combined
    assert r.searches == 16
    assert {t.label for t in r.searches_by_collection} == {"watch"}  # "rare" (1) left out
    text = r.model_dump_json()
    assert "Jane Doe" not in text and "REF-2026-0042" not in text and "rare" not in text
    # No list at all: every stated purpose is free text.
    with FaceSearch(Settings(home=home)) as fs:
        r = public_report(fs.audit, 0, 4e9, purposes=[""], min_count=3)
    assert {t.label: t.count for t in r.searches_by_purpose} == {NOT_LISTED: 15}
