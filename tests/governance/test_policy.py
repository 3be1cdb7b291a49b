"""Use policy: purpose and case, threshold floor, result cap, rate limit, volume spikes."""

from __future__ import annotations

import pytest

from facesearch.errors import InvalidParameterError, ThrottledError
from facesearch.governance.policy import (
    CONSERVATIVE_FLOOR,
    CollectionPolicy,
    SearchLimiter,
    Spike,
    check_search,
    resolve,
)
from facesearch.service import FaceSearch
from facesearch.types import Caller

from ..conftest import face

ANALYST = Caller("key-1", role="searcher", purpose="robbery investigation", case_ref="2026-0042")
NO_PURPOSE = Caller("key-1", role="searcher")


@pytest.fixture
def le(fs: FaceSearch) -> FaceSearch:
    fs.collections.create("bookings", policy=CollectionPolicy(law_enforcement=True))
    fs.collections.index_image("bookings", face("obama.jpg"), external_id="obama")
    fs.collections.index_image("bookings", face("biden.jpg"), external_id="biden")
    return fs


def test_law_enforcement_defaults() -> None:
    eff = resolve(CollectionPolicy(law_enforcement=True), None)
    assert eff.require_purpose and eff.threshold_floor == CONSERVATIVE_FLOOR
    assert eff.max_results_cap == 50
    plain = resolve(CollectionPolicy(), None)
    assert not plain.require_purpose and plain.threshold_floor == 0
    calibrated = resolve(CollectionPolicy(law_enforcement=True), lambda fmr: 97.5,
                         lambda s: 1e-6)
    assert calibrated.threshold_floor == 97.5 and calibrated.floor_fmr == 1e-6


CASES = [
    # (caller, threshold, max results, expected threshold or error words)
    (ANALYST, None, 10, CONSERVATIVE_FLOOR),
    (ANALYST, 99.5, 10, 99.5),
    (ANALYST, 80.0, 10, "below this collection's floor"),
    (NO_PURPOSE, 99.5, 10, "requires a purpose and a case"),
    (Caller("k", purpose="x"), 99.5, 10, "requires a purpose and a case"),
    (ANALYST, 99.5, 51, "exceeds this collection's cap"),
]


@pytest.mark.parametrize(("caller", "threshold", "max_results", "expect"), CASES)
def test_check_search(caller: Caller, threshold: float | None, max_results: int,
                      expect: float | str) -> None:
    eff = resolve(CollectionPolicy(law_enforcement=True), None)
    if isinstance(expect, str):
        with pytest.raises(InvalidParameterError, match=expect):
            check_search(eff, caller, threshold, max_results, 80.0)
    else:
        assert check_search(eff, caller, threshold, max_results, 80.0) == expect


def test_policy_enforced_on_real_searches(le: FaceSearch) -> None:
    with pytest.raises(InvalidParameterError, match="purpose"):
        le.search.by_image("bookings", face("obama2.jpg"), caller=NO_PURPOSE)
    with pytest.raises(InvalidParameterError, match="floor"):
        le.search.by_image("bookings", face("obama2.jpg"), threshold=80,
                                       caller=ANALYST)
    res = le.search.by_image("bookings", face("obama-720p.jpg"), caller=ANALYST)
    floor = le.collections.describe("bookings").policy
    assert res.threshold == floor.threshold_floor >= CONSERVATIVE_FLOOR
    assert floor.floor_fmr is not None and floor.floor_fmr <= 1e-6  # set by measured risk
    assert [m.face.external_id for m in res.results[0].matches] == ["obama"]
    assert "human review" in res.label
    with pytest.raises(InvalidParameterError, match="purpose"):
        le.users.search_by_image("bookings", face("obama2.jpg"), caller=NO_PURPOSE)
    # 1:1 compare is not a 1:N search: no purpose needed.
    assert le.search.compare(face("obama.jpg"), face("obama2.jpg"), caller=NO_PURPOSE).match


def test_policy_change_applies(le: FaceSearch) -> None:
    le.collections.set_policy("bookings", CollectionPolicy(law_enforcement=True,
                                                           threshold_floor=95))
    assert le.collections.describe("bookings").policy.threshold_floor == 95
    le.search.by_image("bookings", face("obama2.jpg"), threshold=96,
                                   caller=ANALYST)


def test_rate_limit_and_spike_alert() -> None:
    t = [0.0]
    spikes: list[Spike] = []
    lim = SearchLimiter(per_minute=60, burst=5, window_seconds=60, spike_factor=3,
                        spike_min=10, min_windows=3, clock=lambda: t[0], on_spike=spikes.append)
    for _ in range(5):
        lim.acquire("a")
    with pytest.raises(ThrottledError) as info:
        lim.acquire("a")
    assert info.value.retry_after >= 1
    lim.acquire("b")  # other callers have their own bucket
    # A steady baseline of ~5 searches a minute for a few minutes, then a burst of 40.
    for _ in range(4):
        t[0] += 60
        for _ in range(5):
            t[0] += 1
            lim.acquire("a")
    assert spikes == []
    t[0] += 60
    lim.per_minute = 0  # no rate limit: only the spike detector is under test now
    for _ in range(40):
        lim.acquire("a")
    assert len(spikes) == 1 and spikes[0].actor == "a" and spikes[0].count > 15


def test_review_is_validated(le: FaceSearch) -> None:
    res = le.search.by_image("bookings", face("obama-720p.jpg"), caller=ANALYST)
    fid = res.results[0].matches[0].face.face_id
    le.reviews.decide(res.search_id, fid, "confirmed", note="same scar", caller=ANALYST)
    with pytest.raises(InvalidParameterError):
        le.reviews.decide(res.search_id, fid, "maybe", caller=ANALYST)


def test_every_search_leaves_an_audit_record(le: FaceSearch) -> None:
    from facesearch.vision.decode import load_image

    probe = load_image(face("obama-720p.jpg"))
    res = le.search.by_image("bookings", probe, caller=ANALYST)
    fid = res.results[0].matches[0].face.face_id
    le.reviews.decide(res.search_id, fid, "rejected", note="different ear",
                          collection="bookings", caller=ANALYST)
    records, _ = le.audit.query(collection="bookings", operation="search.image")
    assert len(records) == 1
    ev = records[0].event
    assert (ev.actor, ev.purpose, ev.case_ref) == ("key-1", "robbery investigation", "2026-0042")
    assert ev.probe_sha256 == probe.sha256 and ev.threshold == res.threshold
    assert ev.model_version == le.pipeline.model_version
    assert [r[0] for r in ev.results] == [fid]
    assert ev.details["search_id"] == res.search_id
    reviews, _ = le.audit.query(operation="review")
    assert reviews[0].event.details["decision"] == "rejected"
    assert reviews[0].event.details["search_id"] == res.search_id
    indexed, _ = le.audit.query(operation="index")
    assert len(indexed) == 2
    assert le.audit.verify().ok


def test_refused_search_is_not_run(le: FaceSearch) -> None:
    before = len(le.audit.query(operation="search.image", limit=1000)[0])
    with pytest.raises(InvalidParameterError):
        le.search.by_image("bookings", face("obama2.jpg"), caller=NO_PURPOSE)
    assert len(le.audit.query(operation="search.image", limit=1000)[0]) == before
    refused, _ = le.audit.query(operation="search.refused")
    assert len(refused) == 1 and "purpose" in str(refused[0].event.details["reason"])
