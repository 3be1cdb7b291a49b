"""The Rekognition-compatible endpoint, driven by a real boto3 client against a real server
process: every supported operation, Rekognition's shapes and behaviour (what programs written
for Rekognition rely on), paging, error classes, validation, S3 objects, SNS notifications,
tags, roles and refused signatures. Every response is also walked against botocore's model
(:mod:`.shapes`)."""

from __future__ import annotations

import datetime
import io
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image as PILImage

from facesearch.limits import MAX_INLINE_IMAGE_BYTES
from facesearch.shapes import rekognition as rekognition_shapes

from .conftest import (
    S3_BUCKET,
    TINY_VIDEO_KEY,
    Server,
    blank_png,
    image_bytes,
    log_lines,
    sns_to_sqs,
    sqs_message,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PEOPLE = "rek-people"


def img(name: str) -> dict[str, bytes]:
    return {"Bytes": image_bytes(name)}


def code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


@pytest.fixture(scope="module")
def people(server: Server) -> dict[str, Any]:
    """A collection with obama.jpg, biden.jpg and two_people.jpg indexed."""
    server.rekognition("admin").create_collection(CollectionId=PEOPLE)
    rek = server.rekognition("indexer")
    return {name: rek.index_faces(CollectionId=PEOPLE, Image=img(f"{name}.jpg"),
                                  ExternalImageId=name)
            for name in ("obama", "biden", "two_people")}


def check_box(box: dict[str, float]) -> None:
    assert set(box) == {"Width", "Height", "Left", "Top"}
    assert 0 < box["Width"] <= 1 and 0 < box["Height"] <= 1
    assert -0.5 < box["Left"] < 1 and -0.5 < box["Top"] < 1


def check_detail(d: dict[str, Any]) -> None:
    check_box(d["BoundingBox"])
    marks = {m["Type"]: (m["X"], m["Y"]) for m in d["Landmarks"]}
    assert set(marks) == {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"}
    assert marks["eyeLeft"][0] < marks["eyeRight"][0]  # as seen in the image
    assert marks["mouthLeft"][0] < marks["mouthRight"][0]
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in marks.values())
    b = d["BoundingBox"]
    assert b["Left"] < marks["nose"][0] < b["Left"] + b["Width"]
    assert set(d["Pose"]) == {"Roll", "Yaw", "Pitch"}
    assert set(d["Quality"]) == {"Brightness", "Sharpness"}
    assert 0 <= d["Quality"]["Brightness"] <= 100 and 0 <= d["Quality"]["Sharpness"] <= 100
    assert 50 <= d["Confidence"] <= 100


# -- collections ------------------------------------------------------------------------------

def test_collection_lifecycle(server: Server) -> None:
    rek = server.rekognition("admin")
    out = rek.create_collection(CollectionId="rek-life")
    assert out["StatusCode"] == 200
    assert out["CollectionArn"].endswith(":collection/rek-life")
    assert out["FaceModelVersion"]
    # The same call again within the second would be signed identically (boto3 does not sign
    # amz-sdk-invocation-id) and refused as a replay: sign a distinguishing header.
    again = server.rekognition("admin")
    again.meta.events.register("before-sign.rekognition.*",
                               lambda request, **_: request.headers.__setitem__(
                                   "x-amz-meta-attempt", "2"))
    with pytest.raises(rek.exceptions.ResourceAlreadyExistsException):
        again.create_collection(CollectionId="rek-life")
    d = rek.describe_collection(CollectionId="rek-life")
    assert d["FaceCount"] == 0 and d["UserCount"] == 0
    assert d["FaceModelVersion"] == out["FaceModelVersion"]
    age = datetime.datetime.now(datetime.UTC) - d["CreationTimestamp"]
    assert abs(age.total_seconds()) < 120
    listed = rek.list_collections()
    assert "rek-life" in listed["CollectionIds"]
    assert len(listed["FaceModelVersions"]) == len(listed["CollectionIds"])
    assert rek.delete_collection(CollectionId="rek-life")["StatusCode"] == 200
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.describe_collection(CollectionId="rek-life")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        again.delete_collection(CollectionId="rek-life")
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.create_collection(CollectionId="no spaces allowed")


def test_list_collections_pages(server: Server) -> None:
    rek = server.rekognition("admin")
    names = {f"rek-page-{i}" for i in range(3)}
    for n in names:
        rek.create_collection(CollectionId=n)
    seen: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 1}
    while True:
        page = rek.list_collections(**kwargs)
        assert len(page["CollectionIds"]) <= 1
        seen += page["CollectionIds"]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert names <= set(seen) and seen == sorted(seen) and len(seen) == len(set(seen))
    paginator = rek.get_paginator("list_collections")
    assert names <= {c for p in paginator.paginate(PaginationConfig={"PageSize": 2})
                     for c in p["CollectionIds"]}
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.list_collections(NextToken="not-a-token")


# -- faces ------------------------------------------------------------------------------------

def test_index_faces_shapes(people: dict[str, Any]) -> None:
    out = people["obama"]
    assert len(out["FaceRecords"]) == 1 and out["UnindexedFaces"] == []
    assert out["FaceModelVersion"]
    face = out["FaceRecords"][0]["Face"]
    assert UUID.match(face["FaceId"]) and UUID.match(face["ImageId"])
    assert face["ExternalImageId"] == "obama"
    assert 50 <= face["Confidence"] <= 100
    check_box(face["BoundingBox"])
    check_detail(out["FaceRecords"][0]["FaceDetail"])
    assert face["BoundingBox"] == out["FaceRecords"][0]["FaceDetail"]["BoundingBox"]
    two = people["two_people"]["FaceRecords"]
    assert len(two) == 2 and two[0]["Face"]["ImageId"] == two[1]["Face"]["ImageId"]


def test_index_faces_reports_unindexed_faces(server: Server) -> None:
    server.rekognition("admin").create_collection(CollectionId="rek-maxfaces")
    rek = server.rekognition("indexer")
    out = rek.index_faces(CollectionId="rek-maxfaces", Image=img("two_people.jpg"), MaxFaces=1,
                          QualityFilter="NONE")
    assert len(out["FaceRecords"]) == 1
    assert [u["Reasons"] for u in out["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]]
    check_detail(out["UnindexedFaces"][0]["FaceDetail"])
    again = rek.index_faces(CollectionId="rek-maxfaces", Image=img("two_people.jpg"))
    assert len(again["FaceRecords"]) == 2  # as Rekognition: the same image is indexed again
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.index_faces(CollectionId="rek-nowhere", Image=img("obama.jpg"))


def test_list_faces_pages(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("indexer")
    total = server.rekognition("auditor").describe_collection(CollectionId=PEOPLE)["FaceCount"]
    assert total == 4
    seen: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"CollectionId": PEOPLE, "MaxResults": 3}
    while True:
        page = rek.list_faces(**kwargs)
        assert page["FaceModelVersion"]
        seen += page["Faces"]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert len(seen) == total == len({f["FaceId"] for f in seen})
    assert {f["ExternalImageId"] for f in seen} == {"obama", "biden", "two_people"}
    fid = people["biden"]["FaceRecords"][0]["Face"]["FaceId"]
    only = rek.list_faces(CollectionId=PEOPLE, FaceIds=[fid])["Faces"]
    assert [f["FaceId"] for f in only] == [fid]
    paginator = rek.get_paginator("list_faces")
    assert sum(len(p["Faces"]) for p in paginator.paginate(
        CollectionId=PEOPLE, PaginationConfig={"PageSize": 1})) == total
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.list_faces(CollectionId=PEOPLE, NextToken="bm9wZTox")


def test_delete_faces(server: Server) -> None:
    server.rekognition("admin").create_collection(CollectionId="rek-delete")
    rek = server.rekognition("indexer")
    fid = rek.index_faces(CollectionId="rek-delete",
                          Image=img("obama.jpg"))["FaceRecords"][0]["Face"]["FaceId"]
    ghost = str(uuid.uuid4())
    out = rek.delete_faces(CollectionId="rek-delete", FaceIds=[fid, ghost])
    assert out["DeletedFaces"] == [fid]
    assert out["UnsuccessfulFaceDeletions"] == [{"FaceId": ghost, "Reasons": ["FACE_NOT_FOUND"]}]
    assert rek.list_faces(CollectionId="rek-delete")["Faces"] == []
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.delete_faces(CollectionId="rek-delete", FaceIds=["not-a-uuid"])


def test_delete_faces_leaves_faces_of_a_user(server: Server) -> None:
    """As Rekognition: a face associated to a user is not deleted
    (ASSOCIATED_TO_AN_EXISTING_USER); once disassociated, it is."""
    server.rekognition("admin").create_collection(CollectionId="rek-delete-user")
    rek = server.rekognition("indexer")
    owned, loose = (rek.index_faces(CollectionId="rek-delete-user", Image=img(name))
                    ["FaceRecords"][0]["Face"]["FaceId"] for name in ("obama.jpg", "biden.jpg"))
    rek.create_user(CollectionId="rek-delete-user", UserId="barack")
    rek.associate_faces(CollectionId="rek-delete-user", UserId="barack", FaceIds=[owned])
    ghost = str(uuid.uuid4())
    out = rek.delete_faces(CollectionId="rek-delete-user", FaceIds=[owned, ghost, loose])
    assert out["DeletedFaces"] == [loose]
    assert out["UnsuccessfulFaceDeletions"] == [
        {"FaceId": owned, "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]},
        {"FaceId": ghost, "Reasons": ["FACE_NOT_FOUND"]}]
    assert [f["FaceId"] for f in rek.list_faces(CollectionId="rek-delete-user")["Faces"]] == [
        owned]
    rek.disassociate_faces(CollectionId="rek-delete-user", UserId="barack", FaceIds=[owned])
    assert rek.delete_faces(CollectionId="rek-delete-user",
                            FaceIds=[owned])["DeletedFaces"] == [owned]


# -- search, compare, detect --------------------------------------------------------------------

def test_search_faces_by_image(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("searcher")
    out = rek.search_faces_by_image(CollectionId=PEOPLE, Image=img("obama2.jpg"))
    assert out["FaceMatches"], out
    top = out["FaceMatches"][0]
    assert top["Face"]["ExternalImageId"] == "obama" and top["Similarity"] >= 80
    assert all(m["Similarity"] >= 80 for m in out["FaceMatches"])
    assert "biden" not in {m["Face"]["ExternalImageId"] for m in out["FaceMatches"]}
    check_box(out["SearchedFaceBoundingBox"])
    assert 50 <= out["SearchedFaceConfidence"] <= 100 and out["FaceModelVersion"]
    loose = rek.search_faces_by_image(CollectionId=PEOPLE, Image=img("obama2.jpg"),
                                      FaceMatchThreshold=0, MaxFaces=2)
    assert len(loose["FaceMatches"]) == 2
    sims = [m["Similarity"] for m in loose["FaceMatches"]]
    assert sims == sorted(sims, reverse=True)


def test_search_faces_by_face_id(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("searcher")
    fid = people["obama"]["FaceRecords"][0]["Face"]["FaceId"]
    out = rek.search_faces(CollectionId=PEOPLE, FaceId=fid, FaceMatchThreshold=0, MaxFaces=10)
    assert out["SearchedFaceId"] == fid
    ids = [m["Face"]["FaceId"] for m in out["FaceMatches"]]
    assert fid not in ids and len(ids) == 3


def test_search_faces_with_an_unknown_face_id(server: Server, people: dict[str, Any]) -> None:
    """As Rekognition: a face id the collection lacks (never there, or deleted) is a bad
    argument; ResourceNotFoundException means the collection itself is gone."""
    server.rekognition("admin").create_collection(CollectionId="rek-gone-face")
    fid = server.rekognition("indexer").index_faces(
        CollectionId="rek-gone-face", Image=img("obama.jpg"))["FaceRecords"][0]["Face"]["FaceId"]
    server.rekognition("indexer").delete_faces(CollectionId="rek-gone-face", FaceIds=[fid])
    rek = server.rekognition("searcher")
    for face_id in (str(uuid.uuid4()), fid):
        with pytest.raises(rek.exceptions.InvalidParameterException, match="not in collection"):
            rek.search_faces(CollectionId="rek-gone-face", FaceId=face_id)
        with pytest.raises(rek.exceptions.InvalidParameterException, match="not in collection"):
            rek.search_users(CollectionId="rek-gone-face", FaceId=face_id)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.search_faces(CollectionId="rek-nowhere", FaceId=fid)
    with server.native("searcher") as c:  # natively, still a missing face
        r = c.post(f"/v1/collections/rek-gone-face/faces/{fid}/search", json={})
        assert r.status_code == 404 and r.json()["code"] == "face_not_found"


def test_search_errors(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("searcher")
    with pytest.raises(rek.exceptions.InvalidParameterException):  # no face in the image
        rek.search_faces_by_image(CollectionId=PEOPLE, Image={"Bytes": blank_png()})
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.search_faces_by_image(CollectionId=PEOPLE, Image={"Bytes": b"not an image at all"})
    buf = io.BytesIO()
    PILImage.new("L", (8000, 6000)).save(buf, "PNG")  # 48 megapixels, a few kB
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.search_faces_by_image(CollectionId=PEOPLE, Image={"Bytes": buf.getvalue()})
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.search_faces_by_image(CollectionId="rek-nowhere", Image=img("obama2.jpg"))
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.search_faces_by_image(CollectionId=PEOPLE, Image={})


def test_compare_faces(server: Server) -> None:
    rek = server.rekognition("searcher")
    same = rek.compare_faces(SourceImage=img("obama.jpg"), TargetImage=img("obama2.jpg"))
    assert len(same["FaceMatches"]) == 1 and same["UnmatchedFaces"] == []
    assert same["FaceMatches"][0]["Similarity"] >= 80
    check_detail(same["FaceMatches"][0]["Face"])
    check_box(same["SourceImageFace"]["BoundingBox"])
    other = rek.compare_faces(SourceImage=img("obama.jpg"), TargetImage=img("biden.jpg"))
    assert other["FaceMatches"] == [] and len(other["UnmatchedFaces"]) == 1
    loose = rek.compare_faces(SourceImage=img("obama.jpg"), TargetImage=img("biden.jpg"),
                              SimilarityThreshold=0)
    assert len(loose["FaceMatches"]) == 1
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.compare_faces(SourceImage={"Bytes": blank_png()}, TargetImage=img("obama.jpg"))


def test_detect_faces(server: Server) -> None:
    rek = server.rekognition("searcher")
    out = rek.detect_faces(Image=img("two_people.jpg"), Attributes=["DEFAULT"])
    assert len(out["FaceDetails"]) == 2
    for d in out["FaceDetails"]:
        check_detail(d)
    assert rek.detect_faces(Image={"Bytes": blank_png()})["FaceDetails"] == []


def test_s3_objects(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("searcher")
    out = rek.search_faces_by_image(CollectionId=PEOPLE,
                                    Image={"S3Object": {"Bucket": S3_BUCKET,
                                                        "Name": "obama2.jpg"}})
    assert out["FaceMatches"][0]["Face"]["ExternalImageId"] == "obama"
    with pytest.raises(rek.exceptions.InvalidS3ObjectException):
        rek.detect_faces(Image={"S3Object": {"Bucket": S3_BUCKET, "Name": "missing.jpg"}})
    with pytest.raises(rek.exceptions.InvalidS3ObjectException):
        rek.detect_faces(Image={"S3Object": {"Bucket": "no-such-bucket", "Name": "a.jpg"}})
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.detect_faces(Image={"S3Object": {"Bucket": S3_BUCKET, "Name": "notes.txt"}})


# -- users ------------------------------------------------------------------------------------

def test_users(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("indexer")
    obama = people["obama"]["FaceRecords"][0]["Face"]["FaceId"]
    biden = people["biden"]["FaceRecords"][0]["Face"]["FaceId"]
    rek.create_user(CollectionId=PEOPLE, UserId="u-obama")
    with pytest.raises(rek.exceptions.ConflictException):
        rek.create_user(CollectionId=PEOPLE, UserId="u-obama")
    for u in ("u-x", "u-y"):
        rek.create_user(CollectionId=PEOPLE, UserId=u)
    first = rek.list_users(CollectionId=PEOPLE, MaxResults=2)
    assert len(first["Users"]) == 2 and "NextToken" in first
    rest = rek.list_users(CollectionId=PEOPLE, MaxResults=2, NextToken=first["NextToken"])
    users = {u["UserId"]: u["UserStatus"] for u in first["Users"] + rest["Users"]}
    assert users == {"u-obama": "CREATED", "u-x": "CREATED", "u-y": "CREATED"}

    a = rek.associate_faces(CollectionId=PEOPLE, UserId="u-obama", FaceIds=[obama])
    assert a["AssociatedFaces"] == [{"FaceId": obama}] and a["UserStatus"] == "ACTIVE"
    low = rek.associate_faces(CollectionId=PEOPLE, UserId="u-obama", FaceIds=[biden])
    assert low["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    listed = rek.list_faces(CollectionId=PEOPLE, UserId="u-obama")["Faces"]
    assert [(f["FaceId"], f["UserId"]) for f in listed] == [(obama, "u-obama")]

    search = server.rekognition("searcher")
    by_face = search.search_users(CollectionId=PEOPLE, FaceId=obama)
    assert by_face["SearchedFace"] == {"FaceId": obama}
    assert by_face["UserMatches"][0]["User"] == {"UserId": "u-obama", "UserStatus": "ACTIVE"}
    by_image = search.search_users_by_image(CollectionId=PEOPLE, Image=img("obama2.jpg"))
    assert by_image["UserMatches"][0]["User"]["UserId"] == "u-obama"
    assert by_image["UserMatches"][0]["Similarity"] >= 80
    check_detail(by_image["SearchedFace"]["FaceDetail"])
    none = search.search_users_by_image(CollectionId=PEOPLE, Image={"Bytes": blank_png()})
    assert none["UserMatches"] == [] and "SearchedFace" not in none
    # The probe's other faces are reported as not searched, as Rekognition does.
    two = search.search_users_by_image(CollectionId=PEOPLE, Image=img("two_people.jpg"),
                                       UserMatchThreshold=0)
    assert two["SearchedFace"]["FaceDetail"] and len(two["UnsearchedFaces"]) == 1
    assert two["UnsearchedFaces"][0]["Reasons"] == ["FACE_NOT_LARGEST"]
    check_detail(two["UnsearchedFaces"][0]["FaceDetails"])
    searched, other = (two["SearchedFace"]["FaceDetail"]["BoundingBox"],
                       two["UnsearchedFaces"][0]["FaceDetails"]["BoundingBox"])
    assert searched["Width"] * searched["Height"] >= other["Width"] * other["Height"]
    assert search.search_users_by_image(CollectionId=PEOPLE, Image=img("obama2.jpg"),
                                        MaxUsers=1)["UnsearchedFaces"] == []

    d = rek.disassociate_faces(CollectionId=PEOPLE, UserId="u-obama", FaceIds=[obama, biden])
    assert d["DisassociatedFaces"] == [{"FaceId": obama}]
    assert [u["FaceId"] for u in d["UnsuccessfulFaceDisassociations"]] == [biden]
    rek.delete_user(CollectionId=PEOPLE, UserId="u-obama")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.delete_user(CollectionId=PEOPLE, UserId="u-obama")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.associate_faces(CollectionId=PEOPLE, UserId="u-nobody", FaceIds=[obama])


# -- authorisation and authentication -----------------------------------------------------------

def test_roles(server: Server, people: dict[str, Any]) -> None:
    denied = [
        ("searcher", "create_collection", {"CollectionId": "rek-denied"}),
        ("indexer", "delete_collection", {"CollectionId": PEOPLE}),
        ("indexer", "search_faces_by_image", {"CollectionId": PEOPLE,
                                              "Image": {"Bytes": b"x"}}),
        ("admin", "index_faces", {"CollectionId": PEOPLE, "Image": {"Bytes": b"x"}}),
        ("auditor", "delete_faces", {"CollectionId": PEOPLE, "FaceIds": [str(uuid.uuid4())]}),
        ("auditor", "compare_faces", {"SourceImage": {"Bytes": b"x"},
                                      "TargetImage": {"Bytes": b"x"}}),
    ]
    for role, op, kwargs in denied:
        rek = server.rekognition(role)
        with pytest.raises(rek.exceptions.AccessDeniedException):
            getattr(rek, op)(**kwargs)
    assert server.rekognition("auditor").list_faces(CollectionId=PEOPLE, MaxResults=1)["Faces"]


def test_refused_signatures(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    good = server.rekognition("admin")
    good.list_collections()
    cases = [
        (server.rekognition("admin", secret="wrong" * 8), "InvalidSignatureException"),
        (server.rekognition("admin", key_id="FSAKUNKNOWNUNKNOWN00"),
         "UnrecognizedClientException"),
    ]
    for client, expected in cases:
        with pytest.raises(ClientError) as err:
            client.list_collections()
        assert code(err.value) == expected
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    import botocore.auth

    for shift in (-10, +10):
        real = botocore.auth.get_current_datetime
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda shift=shift, real=real, **kw: real(**kw)
                            + datetime.timedelta(minutes=shift))
        with pytest.raises(ClientError) as err:
            good.list_collections()
        assert code(err.value) == "InvalidSignatureException"
        assert "Signature expired" in str(err.value) or "not yet current" in str(err.value)
        monkeypatch.undo()
    good.list_collections()

    r = httpx.post(server.url + "/", content=b"{}", headers={
        "X-Amz-Target": "RekognitionService.ListCollections",
        "Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 403
    assert r.json()["__type"] == "MissingAuthenticationTokenException"


def test_revoked_key_is_refused(server: Server) -> None:
    from facesearch.service import FaceSearch

    with FaceSearch(server.settings()) as fs:
        new = fs.keys.create("auditor", label="short-lived")
    rek = server.rekognition("auditor", key_id=new.info.key_id, secret=new.secret)
    rek.list_collections()
    with FaceSearch(server.settings()) as fs:
        fs.keys.revoke(new.info.key_id)
    with pytest.raises(ClientError) as err:
        rek.list_collections()
    assert code(err.value) == "UnrecognizedClientException"


def test_request_log_names_the_key(server: Server, people: dict[str, Any]) -> None:
    server.rekognition("auditor").describe_collection(CollectionId=PEOPLE)
    time.sleep(0.2)
    lines = [x for x in log_lines(server) if x.get("operation") == "DescribeCollection"]
    assert lines and lines[-1]["key_id"] == server.keys["auditor"].key_id
    assert lines[-1]["api"] == "rekognition" and lines[-1]["status"] == 200


# -- limits -----------------------------------------------------------------------------------

def test_full_queue_is_throttled(small_server: Server) -> None:
    rek = small_server.rekognition("searcher", retries=1)
    # 12 megapixels in ~36 kB (base64 well under the 64 KiB body limit): decoding and
    # detecting it keeps the one worker busy a while.
    # Each call another image: identical calls signed in one second would be answered once
    # (the repeats wait for the first one's answer; facesearch.api.replay).
    blanks = [blank_png(3500, 3500 - i) for i in range(12)]
    assert max(len(b) for b in blanks) * 4 // 3 < 60 * 1024

    def call(i: int) -> str:
        try:
            rek.detect_faces(Image={"Bytes": blanks[i]})
            return "ok"
        except ClientError as exc:
            return code(exc)

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(call, range(12)))
    assert "ok" in outcomes and "ThrottlingException" in outcomes, outcomes
    assert set(outcomes) <= {"ok", "ThrottlingException"}
    metrics = httpx.get(small_server.url + "/metrics").text
    assert 'facesearch_rejected_total{reason="queue_full"}' in metrics


def test_body_limit(small_server: Server) -> None:
    rek = small_server.rekognition("searcher")
    big = image_bytes("obama.jpg")  # 280 kB: over the small server's 64 KiB body limit
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_faces(Image={"Bytes": big})


# -- what ported programs rely on (issue 13) -------------------------------------------------

NUMERIC = re.compile(r"^[0-9.]+$")


def test_model_versions_are_numeric(server: Server, people: dict[str, Any]) -> None:
    """FaceModelVersion and IndexFacesModelVersion follow the model's pattern and compare
    numerically (7.x); /v1 keeps facesearch's model names."""
    admin, indexer = server.rekognition("admin"), server.rekognition("indexer")
    with server.native("admin") as c:
        name = c.get(f"/v1/collections/{PEOPLE}").json()["model_version"]
    assert not NUMERIC.match(name) and "/" in name
    number = rekognition_shapes.rekognition_model_version(name)
    assert NUMERIC.match(number) and float(number) >= 7
    assert admin.describe_collection(CollectionId=PEOPLE)["FaceModelVersion"] == number
    listed = admin.list_collections()
    assert listed["FaceModelVersions"][listed["CollectionIds"].index(PEOPLE)] == number
    assert people["obama"]["FaceModelVersion"] == number
    assert people["obama"]["FaceRecords"][0]["Face"]["IndexFacesModelVersion"] == number
    faces = indexer.list_faces(CollectionId=PEOPLE, MaxResults=1)
    assert faces["FaceModelVersion"] == number
    assert faces["Faces"][0]["IndexFacesModelVersion"] == number
    found = server.rekognition("searcher").search_faces_by_image(CollectionId=PEOPLE,
                                                                 Image=img("obama2.jpg"))
    assert found["FaceModelVersion"] == number


def test_model_version_numbers() -> None:
    """The documented map: every listed version distinct; an unlisted one still numeric,
    stable, distinct and above the listed ones."""
    listed = rekognition_shapes.MODEL_VERSION_NUMBERS
    assert len(set(listed.values())) == len(listed)
    assert all(NUMERIC.match(v) for v in listed.values())
    custom = [rekognition_shapes.rekognition_model_version(v) for v in
              ("blazeface+blazeface/sface-2021dec", "mtcnn/dlib-resnet-v1", "x/y")]
    assert all(NUMERIC.match(v) for v in custom) and len(set(custom)) == 3
    assert custom[0] == rekognition_shapes.rekognition_model_version("blazeface+blazeface/sface-2021dec")
    assert min(float(v) for v in custom) > max(float(v) for v in listed.values())


def test_validation_as_strict_as_rekognition(server: Server, people: dict[str, Any]) -> None:
    rek = server.rekognition("searcher")
    with pytest.raises(rek.exceptions.InvalidParameterException, match="Attributes"):
        rek.detect_faces(Image=img("obama.jpg"), Attributes=["FOO"])
    assert len(rek.detect_faces(Image=img("obama.jpg"), Attributes=["ALL"])["FaceDetails"]) == 1
    with pytest.raises(rek.exceptions.InvalidParameterException):
        server.rekognition("indexer").index_faces(CollectionId=PEOPLE, Image=img("obama.jpg"),
                                                  DetectionAttributes=["DEFAULT", "HAIR"])
    # Bytes: at most 5 MB (refused before anything is decoded); S3 objects up to 15 MB.
    over = b"\xff\xd8" + bytes(MAX_INLINE_IMAGE_BYTES - 1)
    with pytest.raises(rek.exceptions.ImageTooLargeException) as err:
        rek.detect_faces(Image={"Bytes": over})
    assert "5 MB" in str(err.value) and "15 MB" in str(err.value)
    assert "16 MB" not in str(err.value)
    for call in (lambda: server.rekognition("admin").list_collections(MaxResults=0),
                 lambda: server.rekognition("indexer").list_faces(CollectionId=PEOPLE,
                                                                  MaxResults=0)):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err.value) == "InvalidParameterException"


def test_tags_on_collections(server: Server) -> None:
    admin = server.rekognition("admin")
    made = admin.create_collection(CollectionId="rek-tags",
                                   Tags={"owner": "unit 7", "basis": "art. 6/1/e"})
    coll_arn = made["CollectionArn"]
    assert admin.list_tags_for_resource(ResourceArn=coll_arn)["Tags"] == {
        "owner": "unit 7", "basis": "art. 6/1/e"}
    admin.tag_resource(ResourceArn=coll_arn, Tags={"retention": "P30D", "owner": "unit 9"})
    admin.untag_resource(ResourceArn=coll_arn, TagKeys=["basis"])
    tags = {"owner": "unit 9", "retention": "P30D"}
    for role in ("auditor", "searcher", "indexer"):  # everyone may read them
        assert server.rekognition(role).list_tags_for_resource(ResourceArn=coll_arn)[
            "Tags"] == tags
    with pytest.raises(admin.exceptions.AccessDeniedException):  # only admins set them
        server.rekognition("indexer").tag_resource(ResourceArn=coll_arn, Tags={"a": "b"})
    for bad in ({"aws:owner": "x"}, {"owner": "a;b"}):
        with pytest.raises(admin.exceptions.InvalidParameterException):
            admin.tag_resource(ResourceArn=coll_arn, Tags=bad)
    with pytest.raises(admin.exceptions.InvalidParameterException):
        admin.create_collection(CollectionId="rek-tags-bad", Tags={"aws:x": "y"})
    with pytest.raises(admin.exceptions.ResourceNotFoundException):  # refused before creating
        admin.describe_collection(CollectionId="rek-tags-bad")
    with pytest.raises(admin.exceptions.InvalidParameterException):
        admin.list_tags_for_resource(ResourceArn="arn:aws:s3:::some-bucket/key")
    gone = coll_arn.replace(":collection/rek-tags", ":collection/rek-nowhere")
    with pytest.raises(admin.exceptions.ResourceNotFoundException):
        admin.list_tags_for_resource(ResourceArn=gone)
    other_account = re.sub(r":\d{12}:", ":111122223333:", coll_arn)
    with pytest.raises(admin.exceptions.ResourceNotFoundException):
        admin.list_tags_for_resource(ResourceArn=other_account)
    admin.delete_collection(CollectionId="rek-tags")  # tags go with the collection
    admin.create_collection(CollectionId="rek-tags")
    assert admin.list_tags_for_resource(ResourceArn=coll_arn)["Tags"] == {}


def test_one_key_runs_a_one_client_program(server: Server) -> None:
    """AWS's collection example, unchanged but for the client: one key that holds the admin,
    indexer and searcher roles creates a collection, indexes and searches. The audit trail
    names the key and its roles; a watchlist manager's key (admin and indexer) cannot
    search."""
    made = json.loads(server.cli("keys", "create", "--role", "admin", "--role", "indexer",
                                 "--role", "searcher", "--label", "app", "--json").stdout)
    assert made["roles"] == ["admin", "indexer", "searcher"]
    rek = server.client(made["key_id"], made["secret"])
    rek.create_collection(CollectionId="rek-app")
    faces = rek.index_faces(CollectionId="rek-app", Image=img("obama.jpg"),
                            ExternalImageId="obama", MaxFaces=1, QualityFilter="AUTO",
                            DetectionAttributes=["ALL"])["FaceRecords"]
    found = rek.search_faces_by_image(CollectionId="rek-app", Image=img("obama2.jpg"),
                                      MaxFaces=1, FaceMatchThreshold=80)["FaceMatches"]
    assert [m["Face"]["FaceId"] for m in found] == [faces[0]["Face"]["FaceId"]]
    rek.delete_collection(CollectionId="rek-app")
    with server.native("auditor") as c:
        events = c.get("/v1/audit", params={"actor": made["key_id"]}).json()["events"]
    assert {e["operation"] for e in events} >= {"collection.create", "index",
                                                "search.image", "collection.delete"}
    assert {e["role"] for e in events} == {"admin,indexer,searcher"}
    with server.native("auditor") as c:
        created = c.get("/v1/audit", params={"operation": "key.create"}).json()["events"]
    assert [e["details"]["key_role"] for e in created
            if e["details"]["key_id"] == made["key_id"]] == ["admin,indexer,searcher"]

    manager = json.loads(server.cli("keys", "create", "--role", "admin", "--role", "indexer",
                                    "--json").stdout)
    m = server.client(manager["key_id"], manager["secret"])
    m.create_collection(CollectionId="rek-manager")
    m.index_faces(CollectionId="rek-manager", Image=img("obama.jpg"))
    with pytest.raises(m.exceptions.AccessDeniedException):
        m.search_faces_by_image(CollectionId="rek-manager", Image=img("obama2.jpg"))
    m.delete_collection(CollectionId="rek-manager")


def test_notification_channel_publishes_to_sns(server: Server, s3_url: str,
                                               people: dict[str, Any]) -> None:
    """AWS's video example: StartFaceSearch with a NotificationChannel, then wait on an SQS
    queue subscribed to the topic for Rekognition's completion message, then GetFaceSearch."""
    topic, queue = sns_to_sqs(s3_url, "rek-video-done")
    rek = server.rekognition("searcher")
    channel = {"SNSTopicArn": topic, "RoleArn": "arn:aws:iam::123456789012:role/rek-video"}
    video = {"S3Object": {"Bucket": S3_BUCKET, "Name": TINY_VIDEO_KEY}}
    job = rek.start_face_search(Video=video, CollectionId=PEOPLE, NotificationChannel=channel,
                                JobTag="tiny-obama")["JobId"]
    message = sqs_message(s3_url, queue)
    assert message["JobId"] == job and message["Status"] == "SUCCEEDED"
    assert message["API"] == "StartFaceSearch" and message["JobTag"] == "tiny-obama"
    assert message["Video"] == {"S3ObjectName": TINY_VIDEO_KEY, "S3Bucket": S3_BUCKET}
    assert abs(message["Timestamp"] / 1000 - time.time()) < 600
    out = rek.get_face_search(JobId=job)
    assert out["JobStatus"] == "SUCCEEDED"
    assert {m["Face"]["ExternalImageId"] for p in out["Persons"] for m in p["FaceMatches"]} \
        >= {"obama"}
    with server.native("searcher") as c:
        assert c.get(f"/v1/video/jobs/{job}").json()["notification"] == "delivered"
    detect = rek.start_face_detection(Video=video, NotificationChannel=channel)["JobId"]
    assert sqs_message(s3_url, queue)["API"] == "StartFaceDetection"
    assert rek.get_face_detection(JobId=detect)["JobStatus"] == "SUCCEEDED"
    with pytest.raises(rek.exceptions.InvalidParameterException):  # not a topic ARN
        rek.start_face_detection(Video=video, NotificationChannel={
            **channel, "SNSTopicArn": "arn:aws:sqs:us-east-1:123456789012:q"})


def test_notification_channel_refused_without_sns(small_server: Server) -> None:
    """Never accepted and dropped: a server without an SNS endpoint refuses the channel (before
    it looks at the video)."""
    rek = small_server.rekognition("searcher")
    with pytest.raises(rek.exceptions.InvalidParameterException, match="SNS endpoint"):
        rek.start_face_detection(
            Video={"S3Object": {"Bucket": S3_BUCKET, "Name": TINY_VIDEO_KEY}},
            NotificationChannel={"SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                                 "RoleArn": "arn:aws:iam::123456789012:role/r"})
