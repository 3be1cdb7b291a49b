"""The native REST API (/v1) with httpx against a real server process: every verb, both image
encodings, paging, the error shape and statuses, roles, keys, health and metrics."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from ..conftest import face
from .conftest import Server, blank_png, image_bytes

COLL = "nat-people"


def files(name: str) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, image_bytes(name), "image/jpeg")}


def b64(name: str) -> str:
    return base64.b64encode(image_bytes(name)).decode()


def error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == code and body["message"]


@pytest.fixture(scope="module")
def people(server: Server) -> dict[str, Any]:
    """A collection with obama.jpg (multipart) and biden.jpg (JSON, base64) indexed."""
    with server.native("admin") as admin:
        assert admin.post("/v1/collections", json={"name": COLL}).status_code == 201
    with server.native("indexer") as c:
        obama = c.post(f"/v1/collections/{COLL}/faces", files=files("obama.jpg"),
                       data={"external_id": "obama"})
        biden = c.post(f"/v1/collections/{COLL}/faces",
                       json={"image": b64("biden.jpg"), "external_id": "biden",
                             "quality_filter": "NONE"})
    assert obama.status_code == 200, obama.text
    assert biden.status_code == 200, biden.text
    return {"obama": obama.json(), "biden": biden.json()}


def test_collections(server: Server) -> None:
    with server.native("admin") as c:
        r = c.post("/v1/collections", json={"name": "nat-life"})
        assert r.status_code == 201
        assert r.json()["name"] == "nat-life" and r.json()["faces"] == 0
        error(c.post("/v1/collections", json={"name": "nat-life"}), 409, "already_exists")
        error(c.post("/v1/collections", json={"name": "bad name"}), 400, "invalid_parameter")
        assert c.get("/v1/collections/nat-life").json()["model_version"]
        for i in range(3):
            c.post("/v1/collections", json={"name": f"nat-page-{i}"})
        names: list[str] = []
        token = None
        while True:
            page = c.get("/v1/collections", params={"max_results": 2,
                                                    **({"next_token": token} if token else {})})
            assert page.status_code == 200, page.text
            names += [x["name"] for x in page.json()["collections"]]
            token = page.json()["next_token"]
            if token is None:
                break
        assert {"nat-life", "nat-page-0", "nat-page-1", "nat-page-2"} <= set(names)
        error(c.get("/v1/collections", params={"next_token": "garbage"}), 400,
              "invalid_pagination_token")
        assert c.delete("/v1/collections/nat-life").status_code == 204
        error(c.get("/v1/collections/nat-life"), 404, "collection_not_found")
        error(c.delete("/v1/collections/nat-life"), 404, "collection_not_found")


def test_index_both_encodings(server: Server, people: dict[str, Any]) -> None:
    obama = people["obama"]
    assert obama["duplicate"] is False and len(obama["indexed"]) == 1
    face = obama["indexed"][0]["face"]
    uuid.UUID(face["face_id"])
    assert face["external_id"] == "obama" and len(face["box"]) == 4
    detail = obama["indexed"][0]["detail"]
    assert len(detail["landmarks"]) == 5 and 0 < detail["score"] <= 1
    assert set(detail["quality"]) == {"size", "sharpness", "brightness", "yaw", "pitch", "roll",
                                      "faceness", "recognisability"}
    assert 60 <= detail["quality"]["recognisability"] <= 100
    assert face["quality"]["recognisability"] == detail["quality"]["recognisability"]
    assert people["biden"]["indexed"][0]["face"]["external_id"] == "biden"
    with server.native("indexer") as c:
        again = c.post(f"/v1/collections/{COLL}/faces", files=files("obama.jpg")).json()
        assert again["duplicate"] is True and again["indexed"] == []
        error(c.post(f"/v1/collections/{COLL}/faces", json={"image": "%%%"}), 400,
              "invalid_parameter")
        error(c.post(f"/v1/collections/{COLL}/faces", json={"external_id": "x"}), 400,
              "invalid_parameter")
        error(c.post(f"/v1/collections/{COLL}/faces",
                     files={"image": ("x.jpg", b"not an image", "image/jpeg")}),
              400, "invalid_image")
        error(c.post(f"/v1/collections/{COLL}/faces", content=b"raw",
                     headers={"Content-Type": "image/jpeg"}), 400, "serialization_error")
        error(c.post("/v1/collections/nat-nowhere/faces", files=files("obama.jpg")), 404,
              "collection_not_found")


def test_list_and_delete_faces(server: Server, people: dict[str, Any]) -> None:
    with server.native("indexer") as c:
        seen = []
        token = None
        while True:
            params: dict[str, Any] = {"max_results": 1}
            if token:
                params["next_token"] = token
            page = c.get(f"/v1/collections/{COLL}/faces", params=params).json()
            seen += page["faces"]
            token = page["next_token"]
            if token is None:
                break
        assert {f["external_id"] for f in seen} >= {"obama", "biden"}
        error(c.get(f"/v1/collections/{COLL}/faces", params={"next_token": "Zm9vOjE"}), 400,
              "invalid_pagination_token")
        with server.native("admin") as admin:
            admin.post("/v1/collections", json={"name": "nat-delete"})
        fid = c.post("/v1/collections/nat-delete/faces",
                     files=files("obama.jpg")).json()["indexed"][0]["face"]["face_id"]
        ghost = str(uuid.uuid4())
        r = c.post("/v1/collections/nat-delete/faces/delete", json={"face_ids": [fid, ghost]})
        assert r.json() == {"deleted": [fid], "not_found": [ghost], "associated_to_user": []}


def test_a_label_names_one_face(server: Server) -> None:
    with server.native("admin") as admin:
        admin.post("/v1/collections", json={"name": "nat-label"})
    with server.native("indexer") as c:
        one = c.post("/v1/collections/nat-label/faces", files=files("two_people.jpg"),
                     data={"external_id": "obama"}).json()
        assert len(one["indexed"]) == 1
        assert [u["reasons"] for u in one["unindexed"]] == [["NOT_LABELLED_FACE"]]
        every = c.post("/v1/collections/nat-label/faces", files=files("two_people.jpg"),
                       data={"external_id": "event", "all_faces": "true",
                             "force": "true"}).json()
        assert len(every["indexed"]) == 2 and every["unindexed"] == []


def test_search(server: Server, people: dict[str, Any]) -> None:
    with server.native("searcher") as c:
        r = c.post(f"/v1/collections/{COLL}/search", files=files("obama2.jpg"),
                   headers={"X-Facesearch-Purpose": "test", "X-Facesearch-Case": "case-1"})
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["label"] and res["search_id"] and res["threshold"] == 80
        top = res["probes"][0]["matches"][0]
        assert top["face"]["external_id"] == "obama" and top["similarity"] >= 80
        # The risk of the probe's quality band, the probe's recognisability, the enrolled
        # face's band, and no warning for a good probe and good enrolled faces.
        assert res["risk"]["quality_band"] == "high"
        probe_q = res["probes"][0]["face"]["quality"]["recognisability"]
        assert res["risk"]["recognisability"] == pytest.approx(probe_q, abs=0.1)
        assert res["risk"]["false_match_rate"] == res["false_match_rate"]
        assert top["enrolled_quality_band"] == "high" and top["enrolled_poor_quality"] is False
        assert res["warnings"] == []
        assert "biden" not in {m["face"]["external_id"] for m in res["probes"][0]["matches"]}
        js = c.post(f"/v1/collections/{COLL}/search",
                    json={"image": b64("two_people.jpg"), "all_faces": True, "threshold": 0,
                          "max_results": 1}).json()
        assert len(js["probes"]) == 2 and all(len(p["matches"]) == 1 for p in js["probes"])
        fid = people["obama"]["indexed"][0]["face"]["face_id"]
        by_id = c.post(f"/v1/collections/{COLL}/faces/{fid}/search",
                       json={"threshold": 0}).json()
        assert by_id["face_id"] == fid and fid not in [m["face"]["face_id"]
                                                       for m in by_id["matches"]]
        assert by_id["risk"]["quality_band"] == "high" and by_id["warnings"] == []
        error(c.post(f"/v1/collections/{COLL}/search", files={
            "image": ("blank.png", blank_png(), "image/png")}), 422, "no_face")
        error(c.post(f"/v1/collections/{COLL}/search", files=files("obama2.jpg"),
                     data={"threshold": "101"}), 400, "invalid_parameter")


def test_compare_and_detect(server: Server) -> None:
    with server.native("searcher") as c:
        same = c.post("/v1/compare", json={"source": b64("obama.jpg"),
                                           "target": b64("obama2.jpg")}).json()
        assert same["match"] is True and same["similarity"] >= 80 and same["threshold"] == 80
        other = c.post("/v1/compare", files={
            "source": ("a.jpg", image_bytes("obama.jpg"), "image/jpeg"),
            "target": ("b.jpg", image_bytes("biden.jpg"), "image/jpeg")}).json()
        assert other["match"] is False and len(other["target_faces"]) == 1
        d = c.post("/v1/detect", files=files("two_people.jpg")).json()
        assert (d["width"], d["height"]) == (1126, 661) and len(d["faces"]) == 2


def test_users(server: Server, people: dict[str, Any]) -> None:
    obama = people["obama"]["indexed"][0]["face"]["face_id"]
    with server.native("indexer") as c:
        r = c.post(f"/v1/collections/{COLL}/users", json={"user_id": "n-obama"})
        assert r.status_code == 201 and r.json()["status"] == "CREATED"
        error(c.post(f"/v1/collections/{COLL}/users", json={"user_id": "n-obama"}), 409,
              "already_exists")
        a = c.post(f"/v1/collections/{COLL}/users/n-obama/faces",
                   json={"face_ids": [obama]}).json()
        assert a["done"] == [obama] and a["user"]["status"] == "ACTIVE"
        users = c.get(f"/v1/collections/{COLL}/users").json()["users"]
        assert [u["user_id"] for u in users] == ["n-obama"]
    with server.native("searcher") as s:
        by_face = s.post(f"/v1/collections/{COLL}/users/search", json={"face_id": obama}).json()
        assert by_face["matches"][0]["user_id"] == "n-obama"
        by_image = s.post(f"/v1/collections/{COLL}/users/search-by-image",
                          files=files("obama2.jpg")).json()
        assert by_image["matches"][0]["user_id"] == "n-obama" and by_image["face"]
    with server.native("indexer") as c:
        d = c.post(f"/v1/collections/{COLL}/users/n-obama/faces/delete",
                   json={"face_ids": [obama]}).json()
        assert d["done"] == [obama]
        assert c.delete(f"/v1/collections/{COLL}/users/n-obama").status_code == 204
        error(c.delete(f"/v1/collections/{COLL}/users/n-obama"), 404, "user_not_found")


def test_authentication_and_roles(server: Server, people: dict[str, Any]) -> None:
    with server.native(None) as anon:
        error(anon.get("/v1/collections"), 401, "missing_authentication")
    with server.native("searcher", secret="wrong") as bad:
        error(bad.get("/v1/collections"), 401, "invalid_signature")
    with httpx.Client(base_url=server.url,
                      headers={"Authorization": "Bearer FSAKNOPE:secret"}) as unknown:
        error(unknown.get("/v1/collections"), 401, "unknown_access_key")
    with server.native("searcher") as c:
        who = c.get("/v1/whoami").json()
        assert (who["key_id"], who["role"], who["roles"]) == (
            server.keys["searcher"].key_id, "searcher", ["searcher"])
        assert "SearchFacesByImage" in who["operations"]  # what the key may call
        assert "CreateCollection" not in who["operations"]
        error(c.post("/v1/collections", json={"name": "nat-nope"}), 403, "access_denied")
        error(c.post(f"/v1/collections/{COLL}/faces", files=files("obama.jpg")), 403,
              "access_denied")
        error(c.get("/v1/keys"), 403, "access_denied")
    with server.native("auditor") as c:
        assert c.get(f"/v1/collections/{COLL}/faces").status_code == 200
        error(c.post("/v1/detect", files=files("obama.jpg")), 403, "access_denied")


def test_sigv4_on_the_native_api(server: Server) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    k = server.keys["auditor"]
    creds = Credentials(k.key_id, k.secret)

    def signed(service: str, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        req = AWSRequest(method="GET", url=server.url + path, params=params or {})
        SigV4Auth(creds, service, "eu-west-1").add_auth(req)
        prepared = req.prepare()
        return httpx.get(prepared.url, headers=dict(prepared.headers))

    assert signed("facesearch", "/v1/whoami").json()["role"] == "auditor"
    r = signed("facesearch", f"/v1/collections/{COLL}/faces", {"max_results": "1"})
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    error(signed("rekognition", "/v1/whoami"), 401, "invalid_signature")


def test_keys_api(server: Server) -> None:
    with server.native("admin") as admin:
        r = admin.post("/v1/keys", json={"role": "searcher", "label": "api-made"})
        assert r.status_code == 201
        new = r.json()
        assert new["active"] and new["secret"] and new["role"] == "searcher"
        listed = admin.get("/v1/keys").json()
        assert new["key_id"] in {k["key_id"] for k in listed}
        assert all("secret" not in k for k in listed)
        error(admin.post("/v1/keys", json={"role": "root"}), 400, "invalid_parameter")
        error(admin.post("/v1/keys", json={"role": "admin", "roles": ["admin"]}), 400,
              "invalid_parameter")
        both = admin.post("/v1/keys", json={"roles": ["searcher", "indexer"]}).json()
        assert both["roles"] == ["indexer", "searcher"] and both["role"] == "indexer,searcher"
        with httpx.Client(base_url=server.url, headers={
                "Authorization": f"Bearer {both['key_id']}:{both['secret']}"}) as c:
            who = c.get("/v1/whoami").json()
            assert (who["key_id"], who["role"], who["roles"]) == (
                both["key_id"], "indexer,searcher", ["indexer", "searcher"])
            # what either role may call, and nothing only an admin may
            assert {"IndexFaces", "SearchFacesByImage"} <= set(who["operations"])
            assert "CreateCollection" not in who["operations"]
        admin.delete(f"/v1/keys/{both['key_id']}")
        with httpx.Client(base_url=server.url, headers={
                "Authorization": f"Bearer {new['key_id']}:{new['secret']}"}) as c:
            assert c.get("/v1/whoami").status_code == 200
            revoked = admin.delete(f"/v1/keys/{new['key_id']}").json()
            assert revoked["active"] is False and revoked["revoked_at"]
            error(c.get("/v1/whoami"), 401, "unknown_access_key")
        error(admin.delete("/v1/keys/FSAKNOSUCHKEY"), 404, "key_not_found")


def test_audit_events(server: Server, people: dict[str, Any]) -> None:
    with server.native("auditor") as c:
        r = c.get("/v1/audit", params={"max_results": 5})
        assert r.status_code == 200, r.text
        page = r.json()
        assert isinstance(page["events"], list) and len(page["events"]) <= 5
        error(c.get("/v1/audit", params={"next_token": "x"}), 400, "invalid_pagination_token")
    for role in ("admin", "searcher"):
        with server.native(role) as c:
            error(c.get("/v1/audit"), 403, "access_denied")


def test_health_metrics_docs(server: Server, people: dict[str, Any]) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
    m = httpx.get(server.url + "/metrics").text
    for name in ("facesearch_requests_total", "facesearch_request_duration_seconds_bucket",
                 "facesearch_queue_depth", "facesearch_faces_indexed_total",
                 "facesearch_workers_busy"):
        assert name in m
    assert 'operation="IndexFaces"' in m
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/collections/{collection}/search" in spec["paths"]
    body = spec["paths"]["/v1/collections/{collection}/faces"]["post"]["requestBody"]
    assert {"multipart/form-data", "application/json"} <= set(body["content"])
    assert httpx.get(server.url + "/docs").status_code == 200
    # Under /v1 the key is checked first (before any body is read), even for unknown routes.
    error(httpx.get(server.url + "/v1/nothing-here"), 401, "missing_authentication")
    with server.native("searcher") as s:
        error(s.get("/v1/nothing-here"), 404, "not_found")


def test_the_cli_json_is_what_v1_answers(server: Server) -> None:
    """The CLI's ``--json`` prints the JSON ``/v1`` answers to the same request (README, "CLI
    JSON"): every key at every depth and every value, but a search's id (each search has its
    own) and the two keys ``faces list`` adds for the data directory's owner."""
    with server.native("admin") as c:
        assert c.post("/v1/collections", json={"name": "nat-cli"}).status_code == 201
    with server.native("indexer") as c:
        r = c.post("/v1/collections/nat-cli/faces", files=files("obama.jpg"),
                   data={"external_id": "obama"})
        assert r.status_code == 200, r.text
        assert c.post("/v1/collections/nat-cli/users", json={"user_id": "u1"}).status_code == 201
        users = c.get("/v1/collections/nat-cli/users").json()
        listed = c.get("/v1/collections/nat-cli/faces").json()
        described = c.get("/v1/collections/nat-cli").json()
    with server.native("searcher") as c:
        searched = c.post("/v1/collections/nat-cli/search", files=files("two_people.jpg"),
                          data={"all_faces": "true"}).json()
        compared = c.post("/v1/compare", files={
            "source": ("a.jpg", image_bytes("obama.jpg"), "image/jpeg"),
            "target": ("b.jpg", image_bytes("two_people.jpg"), "image/jpeg")}).json()

    def cli(*args: str) -> Any:
        return json.loads(server.cli(*args, "--json").stdout)

    assert cli("collection", "describe", "nat-cli") == described
    assert cli("users", "list", "nat-cli") == users and users["users"]
    local = cli("faces", "list", "nat-cli")
    assert all(f.pop("source").endswith("obama.jpg") and f.pop("image_sha256")
               for f in local["faces"])
    assert local == listed
    by_cli = cli("search", "nat-cli", str(face("two_people.jpg")), "--all-faces")
    assert by_cli.pop("search_id") != searched.pop("search_id")
    assert len(searched["probes"]) == 2 and any(p["matches"] for p in searched["probes"])
    assert by_cli == searched
    assert cli("compare", str(face("obama.jpg")), str(face("two_people.jpg"))) == compared
