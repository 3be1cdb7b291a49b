"""Accountability over HTTP: policy on the Rekognition endpoint and the native API, keys issued
for a case, expiry, erasure receipts, reviews, and the audit trail for auditors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .conftest import Server, image_bytes


def with_headers(client: Any, **headers: str) -> Any:
    """Make a boto3 client send extra headers on every call (signed with the request)."""
    def add(request: Any, **_: Any) -> None:
        for k, v in headers.items():
            request.headers[k] = v
    client.meta.events.register("before-sign.rekognition.*", add)
    return client


@pytest.fixture(scope="module")
def le(server: Server) -> Iterator[str]:
    """A law-enforcement collection holding obama.jpg and biden.jpg."""
    name = "le-bookings"
    with server.native("admin") as admin:
        assert admin.post("/v1/collections", json={"name": name}).status_code == 201
        r = admin.put(f"/v1/collections/{name}/policy", json={"law_enforcement": True})
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["require_purpose"] is True
        assert r.json()["effective"]["min_probe_recognisability"] == 40
    idx = server.rekognition("indexer")
    for who in ("obama", "biden"):
        idx.index_faces(CollectionId=name, Image={"Bytes": image_bytes(f"{who}.jpg")},
                        ExternalImageId=who)
    yield name


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_rekognition_search_needs_purpose_and_respects_the_floor(server: Server,
                                                                   le: str) -> None:
    probe = {"Bytes": image_bytes("obama-720p.jpg")}
    plain = server.rekognition("searcher")
    with pytest.raises(ClientError) as info:
        plain.search_faces_by_image(CollectionId=le, Image=probe)
    assert code(info) == "InvalidParameterException"
    assert "purpose" in info.value.response["Error"]["Message"]

    stated = with_headers(server.rekognition("searcher"),
                          **{"X-Facesearch-Purpose": "burglary", "X-Facesearch-Case": "C-17"})
    with pytest.raises(ClientError) as info:
        stated.search_faces_by_image(CollectionId=le, Image=probe, FaceMatchThreshold=80)
    assert code(info) == "InvalidParameterException"
    assert "floor" in info.value.response["Error"]["Message"]
    res = stated.search_faces_by_image(CollectionId=le, Image=probe)
    assert [m["Face"]["ExternalImageId"] for m in res["FaceMatches"]] == ["obama"]
    assert res["FaceMatches"][0]["Similarity"] >= 99


def test_key_issued_for_a_case(server: Server, le: str) -> None:
    with server.native("admin") as admin:
        r = admin.post("/v1/keys", json={"role": "searcher", "label": "det. smith",
                                         "purpose": "homicide", "case_ref": "H-2026-9",
                                         "expires_in_s": 3600})
        assert r.status_code == 201, r.text
        k = r.json()
        assert (k["purpose"], k["case_ref"]) == ("homicide", "H-2026-9") and k["expires_at"]
    client = server.rekognition("searcher", key_id=k["key_id"], secret=k["secret"])
    res = client.search_faces_by_image(CollectionId=le,
                                       Image={"Bytes": image_bytes("obama-720p.jpg")})
    assert res["FaceMatches"]
    other_case = with_headers(server.rekognition("searcher", key_id=k["key_id"],
                                                 secret=k["secret"]),
                              **{"X-Facesearch-Case": "another"})
    with pytest.raises(ClientError) as info:
        other_case.search_faces_by_image(CollectionId=le,
                                         Image={"Bytes": image_bytes("obama-720p.jpg")})
    assert code(info) == "AccessDeniedException"
    with server.native("auditor") as auditor:
        events = auditor.get("/v1/audit", params={"case": "H-2026-9"}).json()["events"]
    searches = [e for e in events if e["operation"] == "search.image"]
    assert searches and searches[0]["actor"] == k["key_id"]
    assert searches[0]["purpose"] == "homicide"


def test_expired_key_is_refused(server: Server, le: str) -> None:
    with server.native("admin") as admin:
        k = admin.post("/v1/keys", json={"role": "searcher", "expires_in_s": 1}).json()
    time.sleep(1.5)
    client = server.rekognition("searcher", key_id=k["key_id"], secret=k["secret"])
    with pytest.raises(ClientError) as info:
        client.list_collections()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)


def test_reviews_must_name_a_real_search_and_one_of_its_candidates(server: Server,
                                                                   le: str) -> None:
    headers = {"X-Facesearch-Purpose": "burglary", "X-Facesearch-Case": "C-19"}
    with server.native("searcher") as s:
        r = s.post(f"/v1/collections/{le}/search", headers=headers,
                   files={"image": ("p.jpg", image_bytes("obama-720p.jpg"), "image/jpeg")})
        assert r.status_code == 200, r.text
        body = r.json()
        candidates = [m["face"]["face_id"] for m in body["probes"][0]["matches"]]
        assert candidates
        with server.native("admin") as admin:
            listed = admin.get(f"/v1/collections/{le}/faces").json()["faces"]
        others = [f["face_id"] for f in listed if f["face_id"] not in candidates]
        review = {"search_id": body["search_id"], "face_id": candidates[0],
                  "decision": "rejected"}
        made_up = s.post("/v1/reviews", json={**review, "search_id": str(uuid.uuid4())})
        assert made_up.status_code == 404, made_up.text
        assert made_up.json()["code"] == "search_not_found"
        for face_id in [str(uuid.uuid4()), *others[:1]]:
            r = s.post("/v1/reviews", json={**review, "face_id": face_id})
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "not_a_candidate"
        r = s.post("/v1/reviews", json={**review, "collection": "another-collection"})
        assert r.status_code == 400, r.text
        r = s.post("/v1/reviews", json=review)
        assert r.status_code == 201, r.text
    with server.native("auditor") as auditor:
        events = auditor.get("/v1/audit", params={"operation": "review"}).json()["events"]
        mine = [e for e in events if e["details"]["search_id"] == body["search_id"]]
        assert len(mine) == 1 and mine[0]["collection"] == le  # recorded once, the search's


def test_native_review_erase_and_audit(server: Server, le: str) -> None:
    headers = {"X-Facesearch-Purpose": "burglary", "X-Facesearch-Case": "C-18"}
    with server.native("searcher") as s:
        r = s.post(f"/v1/collections/{le}/search", headers=headers,
                   files={"image": ("p.jpg", image_bytes("obama-720p.jpg"), "image/jpeg")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "human review" in body["label"]
        face_id = body["probes"][0]["matches"][0]["face"]["face_id"]
        rv = s.post("/v1/reviews", json={"search_id": body["search_id"], "face_id": face_id,
                                         "decision": "confirmed", "note": "tattoo matches",
                                         "collection": le})
        assert rv.status_code == 201, rv.text
        assert s.post(f"/v1/collections/{le}/erase",
                      json={"external_id": "biden"}).status_code == 403
    with server.native("indexer") as idx:
        r = idx.post(f"/v1/collections/{le}/erase", json={"external_id": "biden"})
        assert r.status_code == 200, r.text
        receipt = r.json()
        assert len(receipt["face_ids"]) == 1 and receipt["receipt_id"]
    with server.native("auditor") as auditor:
        rev = auditor.get("/v1/audit", params={"operation": "review"}).json()["events"]
        assert rev[-1]["details"]["decision"] == "confirmed"
        erased = auditor.get("/v1/audit", params={"operation": "faces.erase"}).json()["events"]
        assert erased[-1]["details"]["receipt_id"] == receipt["receipt_id"]
        v = auditor.get("/v1/audit/verify").json()
        assert v["ok"] and v["events"] > 0
        csv = auditor.get("/v1/audit/export", params={"format": "csv", "case": "C-18"})
        assert csv.status_code == 200 and "search.image" in csv.text
        assert auditor.get(f"/v1/collections/{le}/policy").json()["effective"][
            "threshold_floor"] >= 95


def test_threshold_meaning_over_http(server: Server, le: str) -> None:
    with server.native("searcher") as s:
        r = s.get("/v1/calibration/threshold", params={"fpir": 0.001, "gallery_size": 300000})
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["required_fmr"] < 1e-8 and a["threshold"]["similarity"] > 99.9
        assert a["threshold"]["extrapolated"] is True
        risk80 = s.get("/v1/calibration/risk", params={"similarity": 80, "collection": le}).json()
        risk99 = s.get("/v1/calibration/risk", params={"similarity": 99, "gallery_size": 2}).json()
        assert risk80["false_match_rate"] > risk99["false_match_rate"] > 0
        assert risk80["gallery_size"] >= 1 and 0 < risk80["expected_fpir"] < 1
        r = s.post(f"/v1/collections/{le}/search",
                   headers={"X-Facesearch-Purpose": "p", "X-Facesearch-Case": "c"},
                   files={"image": ("p.jpg", image_bytes("obama-720p.jpg"), "image/jpeg")})
        body = r.json()
        assert body["false_match_rate"] <= 1e-6 and body["expected_fpir"] is not None
