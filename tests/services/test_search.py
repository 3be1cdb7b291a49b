"""The one search gate: policy and rate limit before any image work, the quality filter before
searching, one audit record per search (refused ones too, with the probe's SHA-256), and the
risk at its threshold carried in every result."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facesearch.errors import DelegationEndedError, InvalidParameterError, ProbeQualityError
from facesearch.governance.bands import find_band_calibrations
from facesearch.governance.policy import CollectionPolicy
from facesearch.service import FaceSearch
from facesearch.services.search import DEFAULT_USER_MATCH_THRESHOLD, Delegation
from facesearch.types import Caller, QualityFilter
from facesearch.vision import similarity as sim

from ..conftest import face

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL

ANALYST = Caller("FSAKANALYST0000000000", role="searcher", purpose="robbery investigation",
                 case_ref="2026-0042")
NO_PURPOSE = Caller("FSAKANALYST0000000000", role="searcher")
GARBAGE = b"not an image at all, and never decoded"


@pytest.fixture
def people(fs: FaceSearch) -> dict[str, str]:
    """Collection ``c``: obama.jpg and biden.jpg (face ids by name), user ``barack``."""
    fs.collections.create("c")
    ids = {n: fs.collections.index_image("c", face(f"{n}.jpg"), external_id=n).indexed[0].face_id
           for n in ("obama", "biden")}
    fs.users.create("c", "barack")
    fs.users.associate("c", "barack", [ids["obama"]])
    return ids


def searches(fs: FaceSearch) -> list[Any]:
    """Audit records of searches (refused ones included), oldest first."""
    recs, _ = fs.audit.query(limit=1000)
    return [r for r in recs if r.event.operation.startswith(("search.", "users.search"))]


# Every kind of 1:N search, as (operation recorded, call); each takes a caller.
KINDS: dict[str, tuple[str, Callable[[FaceSearch, dict[str, str], Caller], Any]]] = {
    "image": ("search.image", lambda fs, ids, c: fs.search.by_image(
        "c", face("obama2.jpg"), caller=c)),
    "face id": ("search.face", lambda fs, ids, c: fs.search.by_face_id(
        "c", ids["obama"], caller=c)),
    "vectors": ("search.stream", lambda fs, ids, c: fs.search.by_vectors(
        "c", fs.search.face_vector("c", ids["obama"]), operation="search.stream", caller=c)),
    "users by image": ("users.search.image", lambda fs, ids, c: fs.users.search_by_image(
        "c", face("obama2.jpg"), caller=c)),
    "users by face": ("users.search", lambda fs, ids, c: fs.users.search(
        "c", face_id=ids["obama"], caller=c)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_audit_record_per_search_with_its_risk(fs: FaceSearch, people: dict[str, str],
                                                   kind: str) -> None:
    operation, run = KINDS[kind]
    before = len(searches(fs))
    res = run(fs, people, ANALYST)
    after = searches(fs)
    assert len(after) == before + 1
    ev = after[-1].event
    assert ev.operation == operation and ev.collection == "c"
    assert ev.details["search_id"] == res.search_id and ev.threshold == res.threshold
    assert ev.actor == ANALYST.actor and ev.case_ref == ANALYST.case_ref
    # What the threshold means is computed once, by the gate, for this collection's size,
    # from the calibration of the probe's quality band where the probe's quality is known
    # (image and stored-face searches; not for bare vectors).
    cal = fs.models.calibration(fs.pipeline.model_version)
    assert cal is not None and res.risk is not None
    if kind in ("vectors", "users by face"):
        assert res.risk == cal.risk(res.threshold, 2) and res.risk.quality_band is None
    else:
        bands = find_band_calibrations(fs.pipeline.model_version)
        assert bands is not None and res.risk.quality_band == "high"
        assert res.risk == bands.risk(cal, res.threshold, 2, res.risk.recognisability)
        assert kind.startswith("users") or ev.details["quality_band"] == "high"


def test_the_risk_is_the_calibrations_at_the_collections_size(fs: FaceSearch,
                                                             people: dict[str, str]) -> None:
    res = fs.search.by_image("c", face("obama2.jpg"), threshold=95)
    assert res.risk is not None and res.risk.gallery_size == 2
    assert res.risk.similarity == pytest.approx(95)
    assert res.risk.expected_fpir == pytest.approx(1 - (1 - res.risk.false_match_rate) ** 2)
    assert [m.face.external_id for m in res.matches] == ["obama"]


@pytest.mark.parametrize("kind", ["image", "users by image"])
def test_policy_refuses_before_the_probe_is_read_and_records_its_hash(
        fs: FaceSearch, kind: str) -> None:
    """A search the policy refuses is refused as such, whatever the probe is: the probe is
    never decoded (garbage bytes give the policy's reason, not an image error), and the
    refusal is audited with the probe's SHA-256."""
    fs.collections.create("c", policy=CollectionPolicy(law_enforcement=True))
    call = {"image": lambda: fs.search.by_image("c", GARBAGE, caller=NO_PURPOSE),
            "users by image": lambda: fs.users.search_by_image("c", GARBAGE,
                                                               caller=NO_PURPOSE)}[kind]
    with pytest.raises(InvalidParameterError, match="purpose and a case"):
        call()
    refused = searches(fs)[-1].event
    assert refused.operation == "search.refused"
    assert refused.probe_sha256 == hashlib.sha256(GARBAGE).hexdigest()
    assert refused.details["operation"] == KINDS[kind][0]


def test_quality_filter_applies_before_searching(fs: FaceSearch, people: dict[str, str]) -> None:
    """A probe whose face fails the quality filter is refused before the vector search: the
    trail holds the refusal (with the reason and the probe's hash) and no candidates."""
    probe = face("obama-240p.jpg")  # 23 px between the eyes: below HIGH's 30
    with pytest.raises(InvalidParameterError, match="HIGH quality filter.*SMALL_BOUNDING_BOX"):
        fs.search.by_image("c", probe, quality_filter=QualityFilter.HIGH, caller=ANALYST)
    last = searches(fs)[-1].event
    assert last.operation == "search.refused" and not last.results
    assert "SMALL_BOUNDING_BOX" in str(last.details["reason"])
    assert last.probe_sha256 == hashlib.sha256(probe.read_bytes()).hexdigest()
    ok = fs.search.by_image("c", probe, quality_filter=QualityFilter.LOW, caller=ANALYST)
    assert ok.matches[0].face.external_id == "obama"


def test_faces_not_searched_are_reported(fs: FaceSearch, people: dict[str, str]) -> None:
    res = fs.search.by_image("c", face("two_people.jpg"), caller=ANALYST)
    assert len(res.faces) == 1 and len(res.results) == 1
    assert len(res.unsearched) == 1 and res.unsearched_reasons == [["FACE_NOT_LARGEST"]]
    every = fs.search.by_image("c", face("two_people.jpg"), all_faces=True, caller=ANALYST)
    assert len(every.faces) == 2 and len(every.unsearched) == 0
    assert sorted(m.face.external_id for r in every.results for m in r.matches) == [
        "biden", "obama"]
    users = fs.users.search_by_image("c", face("two_people.jpg"), caller=ANALYST)
    assert len(users.faces) == 1 and len(users.unsearched) == 1


def test_users_quality_filter_answers_without_searching(fs: FaceSearch,
                                                        people: dict[str, str]) -> None:
    res = fs.users.search_by_image("c", face("obama-240p.jpg"),
                                   quality_filter=QualityFilter.HIGH, caller=ANALYST)
    assert res.matches == [] and res.quality_reasons == ["SMALL_BOUNDING_BOX"]
    ev = searches(fs)[-1].event
    assert ev.operation == "users.search.image" and not ev.results
    assert fs.users.search_by_image("c", face("obama2.jpg"),
                                    caller=ANALYST).matches[0].user_id == "barack"


def test_vectors_of_another_model_are_refused(fs: FaceSearch, people: dict[str, str]) -> None:
    from facesearch.errors import ModelMismatchError

    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, "c")
        fs.store.collections.set_model(conn, coll.id, "other/model")
    with pytest.raises(ModelMismatchError):
        fs.search.by_vectors("c", np.zeros((1, 128), np.float32), operation="search.video")


def test_search_only_the_face_picked(fs: FaceSearch, people: dict[str, str]) -> None:
    """The web page lets an analyst pick one face of a photo of several: only that one is
    searched (bystanders are not), and a face the probe does not have is a refusal."""
    _, faces = fs.collections.detect_faces(face("two_people.jpg"))
    assert len(faces) == 2
    for i in range(2):
        res = fs.search.by_image("c", face("two_people.jpg"), threshold=0, face_index=i,
                                 caller=ANALYST)
        assert len(res.results) == 1 and len(res.faces) == 1
        assert np.allclose(res.faces.boxes[0], faces.boxes[i], atol=1)
        assert res.unsearched_reasons == [["FACE_NOT_SELECTED"]]
    rec = searches(fs)[-1]
    assert rec.event.operation == "search.image" and rec.event.details["probes"] == 1
    with pytest.raises(InvalidParameterError, match="the probe has 2 face"):
        fs.search.by_image("c", face("two_people.jpg"), face_index=2, caller=ANALYST)
    refused = searches(fs)[-1]
    assert refused.event.operation == "search.refused"
    assert refused.event.probe_sha256 == hashlib.sha256(
        face("two_people.jpg").read_bytes()).hexdigest()


def junk_probe(tmp_path: Path) -> Path:
    """obama.jpg shrunk 30 times (eyes ~3.5 px apart) and enlarged back: the detector still
    finds a face (score ~0.86), but no one could recognise it."""
    px = cv2.imread(str(face("obama.jpg")))
    h, w = px.shape[:2]
    small = cv2.resize(px, (w // 30, h // 30), interpolation=cv2.INTER_AREA)
    path = tmp_path / "junk.png"
    cv2.imwrite(str(path), cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return path


def test_junk_probe_refused_by_a_law_enforcement_collection_and_audited(
        fs: FaceSearch, tmp_path: Path) -> None:
    fs.collections.create("le", policy=CollectionPolicy(law_enforcement=True))
    fs.collections.index_image("le", face("obama.jpg"), external_id="obama")
    probe = junk_probe(tmp_path)
    with pytest.raises(ProbeQualityError, match="recognisability .* below this collection's "
                                                "floor of 40"):
        fs.search.by_image("le", probe, caller=ANALYST)
    refused = searches(fs)[-1].event
    assert refused.operation == "search.refused" and not refused.results
    assert "recognisability" in str(refused.details["reason"])
    assert refused.probe_sha256 == hashlib.sha256(probe.read_bytes()).hexdigest()
    with pytest.raises(ProbeQualityError):
        fs.users.search_by_image("le", probe, caller=ANALYST)
    # A good probe of the same person is searched, in the high band, without warnings.
    ok = fs.search.by_image("le", face("obama2.jpg"), caller=ANALYST)
    assert ok.matches[0].face.external_id == "obama" and not ok.warnings
    assert ok.risk is not None and ok.risk.quality_band == "high"


def test_other_collections_warn_and_state_the_risk_of_the_probe_s_band(
        fs: FaceSearch, people: dict[str, str], tmp_path: Path) -> None:
    probe = junk_probe(tmp_path)
    res = fs.search.by_image("c", probe, threshold=50, caller=ANALYST)
    assert res.risk is not None and res.risk.quality_band == "unrecognisable"
    assert res.risk.recognisability is not None and res.risk.recognisability < 20
    assert any("poor probe" in w for w in res.warnings)
    good = fs.search.by_image("c", face("obama2.jpg"), threshold=50, caller=ANALYST)
    assert good.risk is not None and good.risk.quality_band == "high" and not good.warnings
    # The poor band's measured FMR at the same threshold is at least the good band's.
    assert res.risk.false_match_rate >= good.risk.false_match_rate
    ev = searches(fs)[-1].event
    assert ev.details["quality_band"] == "high"


def test_candidates_from_poor_enrolled_faces_say_so(fs: FaceSearch, people: dict[str, str],
                                                     tmp_path: Path) -> None:
    kept = fs.collections.index_image("c", junk_probe(tmp_path), external_id="smudge",
                                      quality_filter=QualityFilter.NONE)
    assert len(kept.indexed) == 1
    assert kept.indexed[0].quality["recognisability"] < 20
    res = fs.search.by_image("c", face("obama2.jpg"), threshold=0, caller=ANALYST)
    bands = {m.face.external_id: m for m in res.matches}
    assert bands["smudge"].enrolled_quality_band == "unrecognisable"
    assert bands["smudge"].enrolled_poor_quality
    assert bands["obama"].enrolled_quality_band == "high"
    assert not bands["obama"].enrolled_poor_quality
    assert any("enrolled faces of poor quality" in w for w in res.warnings)
    # The stored face's band survives a round trip through the store.
    page, _ = fs.collections.list_faces("c")
    smudge = next(f for f in page if f.external_id == "smudge")
    assert smudge.quality["recognisability"] < 20 and 0 <= smudge.quality["faceness"] <= 1
    # A search from the poor stored face states the risk of its band.
    by_id = fs.search.by_face_id("c", smudge.face_id, threshold=50, caller=ANALYST)
    assert by_id.risk is not None and by_id.risk.quality_band == "unrecognisable"
    assert by_id.warnings


def test_the_gate_gives_every_threshold(fs: FaceSearch) -> None:
    """The threshold a search uses when the caller gives none is the gate's: the model's
    default, or the collection's policy floor when that is higher; a face joins a user at
    the gate's user match threshold (Rekognition's 75) unless the caller gives one."""
    fs.collections.create("plain")
    fs.collections.create("strict", policy=CollectionPolicy(threshold_floor=92.5))
    assert fs.search.threshold("plain") == sim.DEFAULT_THRESHOLD
    assert fs.search.threshold("strict") == 92.5
    assert fs.search.threshold("plain", 61.0) == 61.0
    with pytest.raises(InvalidParameterError, match="between 0 and 100"):
        fs.search.threshold("plain", 101.0)
    # What admission uses for a search without a threshold is the same number.
    vec = np.zeros((1, 128), np.float32)
    vec[0, 0] = 1.0
    for name in ("plain", "strict"):
        used = fs.search.by_vectors(name, vec, operation="search.stream").threshold
        assert used == fs.search.threshold(name)
    assert fs.search.user_match_threshold() == DEFAULT_USER_MATCH_THRESHOLD == 75.0
    assert fs.search.user_match_threshold(60.0) == 60.0


def test_a_delegated_search_is_refused_once_its_creator_s_key_is_revoked(
        fs: FaceSearch, people: dict[str, str]) -> None:
    """A video job's or a stream processor's search is made on behalf of its creator: the
    gate lets it through while the creator's key may act, and refuses it (typed, before the
    collection is read, nothing searched nor recorded as a search) once the key is revoked."""
    key = fs.keys.create("searcher").info
    creator = Caller(actor=key.key_id, role="searcher")
    vec = fs.search.face_vector("c", people["obama"])
    before = len(searches(fs))
    found = fs.search.by_vectors("c", vec, operation="search.video",
                                 delegation=Delegation(creator))
    assert found.matches and found.matches[0].face.face_id == people["obama"]
    recorded = searches(fs)
    assert len(recorded) == before + 1 and recorded[-1].event.actor == key.key_id
    fs.keys.revoke(key.key_id)
    with pytest.raises(DelegationEndedError, match=f"access key {key.key_id} was revoked"):
        fs.search.by_vectors("c", vec, operation="search.video", delegation=Delegation(creator))
    with pytest.raises(DelegationEndedError, match="was revoked"):
        fs.search.admit("no such collection", operation="search.stream",
                        delegation=Delegation(creator))
    assert len(searches(fs)) == before + 1
    # The local user's own work is never refused this way.
    fs.search.check_delegation(Delegation(Caller.local()))
