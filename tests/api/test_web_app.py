"""The web app's pages end to end, in headless Chromium against a real server, one key per role:
create a collection (law enforcement too), enrol photos with a progress bar, browse them,
search a probe and see the right candidate's photo first, record a review and find it on the
audit page, the transparency report, erase with a receipt; a video job's timeline shows
Lin-Manuel Miranda in the test clip, with its frames; the live page shows the clip played as
a camera, with an event and the names over the frames. And the routes behind the pages,
role by role. The search page itself is tests/api/test_web.py's."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from facesearch.media.frames import iter_frames

from ..conftest import FACES, face
from ..media.video_helpers import ALEX_PHOTO, LIN, LIN_PHOTO, clip
from .browser import Browser, chromium_path, in_ci
from .conftest import Server, image_bytes, start_server, stop_server

WATCHLIST = "clip-watch"
CASE = "CASE-UI-7"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose video roots are the test photos' folder (the clip plays as a camera),
    with a watchlist of Lin-Manuel Miranda and Alex Lacamoire."""
    root = tmp_path_factory.mktemp("web-app")
    srv = start_server(root / "home", root / "server.log",
                       FACESEARCH_API_VIDEO_PATH_ROOTS=str(FACES))
    try:
        with srv.native("admin") as admin:
            assert admin.post("/v1/collections", json={"name": WATCHLIST}).status_code == 201
        with srv.native("indexer") as idx:
            for photo in (LIN_PHOTO, ALEX_PHOTO):
                r = idx.post(f"/v1/collections/{WATCHLIST}/faces",
                             data={"external_id": Path(photo).stem},
                             files={"image": (photo, image_bytes(photo), "image/png")})
                assert r.status_code == 200 and len(r.json()["indexed"]) == 1, r.text
        yield srv
    finally:
        stop_server(srv)


def chromium() -> str:
    path = chromium_path()
    if path is None:
        if in_ci():
            pytest.fail("chromium is not installed (Debian package chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium(), tmp_path / "profile")
    b.send("Page.setDownloadBehavior", behavior="deny")
    yield b
    b.close()


def sign_in(b: Browser, server: Server, role: str) -> None:
    key = server.keys[role]
    b.navigate(f"{server.url}/ui/")
    if b.visible("#workspace"):
        b.click("#sign-out")
    b.fill("#key-id", key.key_id)
    b.fill("#key-secret", key.secret)
    b.click("#sign-in")
    b.wait("!document.getElementById('workspace').hidden && "
           "document.documentElement.dataset.ready === 'true'")
    assert b.text("#who-role") == role


def nav(b: Browser) -> list[str]:
    return list(b.eval("[...document.querySelectorAll('#nav li')].filter(li => !li.hidden)"
                       ".map(li => li.dataset.page)"))


# -- the routes behind the pages --------------------------------------------------------------

def test_what_each_role_may_see(app_server: Server) -> None:
    s = app_server
    with s.native("indexer") as idx:
        r = idx.post(f"/v1/collections/{WATCHLIST}/faces", files={
            "image": ("obama.jpg", image_bytes("obama.jpg"), "image/jpeg")},
            data={"external_id": "obama-roles"})
        face_id = r.json()["indexed"][0]["face"]["face_id"]
    ops = {}
    for role in ("admin", "indexer", "searcher", "auditor"):
        with s.native(role) as c:
            ops[role] = set(c.get("/v1/whoami").json()["operations"])
    assert "SearchFacesByImage" in ops["searcher"] and "ListAuditEvents" not in ops["searcher"]
    assert "GetTransparencyReport" in ops["auditor"] and "GetFaceCrops" not in ops["auditor"]
    assert "CreateCollection" in ops["admin"] and "IndexFaces" in ops["indexer"]
    # Faces are seen by the roles whose work needs them; auditors see aggregates only.
    for role in ("admin", "indexer", "searcher"):
        with s.native(role) as c:
            r = c.get(f"/v1/collections/{WATCHLIST}/crops",
                      params={"face_id": [face_id, "00000000-0000-4000-8000-000000000000"]})
            assert r.status_code == 200, r.text
            card = r.json()["faces"][0]
            assert r.json()["not_found"] == ["00000000-0000-4000-8000-000000000000"]
            assert card["source_name"] == "obama.jpg" and card["face"]["external_id"] == \
                "obama-roles"
            crop = card["crop"]
            img = PILImage.open(io.BytesIO(base64.b64decode(crop["data"])))
            assert img.format == "JPEG" and img.size == (crop["size"], crop["size"]) == (160, 160)
            assert len(crop["landmarks"]) == 5 and len(crop["box"]) == 4
            one = c.get(f"/v1/collections/{WATCHLIST}/faces/{face_id}/crop")
            assert one.headers["content-type"] == "image/jpeg"
            assert one.content == base64.b64decode(crop["data"])
    with s.native("auditor") as auditor:
        r = auditor.get(f"/v1/collections/{WATCHLIST}/crops", params={"face_id": face_id})
        assert r.status_code == 403
        assert auditor.get(f"/v1/collections/{WATCHLIST}/faces/{face_id}/crop").status_code \
            == 403
        # the report, for auditors only
        period = {"from": 0, "to": 4_000_000_000}
        r = auditor.get("/v1/audit/report", params=period)
        assert r.status_code == 200 and r.json()["audit_chain_ok"] is True
        page = auditor.get("/v1/audit/report", params={**period, "format": "html"})
        assert page.headers["content-type"].startswith("text/html")
        assert "sandbox" in page.headers["content-security-policy"]
        assert "attachment" in page.headers["content-disposition"]
        assert face_id not in page.text
        pdf = auditor.get("/v1/audit/report", params={**period, "format": "pdf"})
        assert pdf.content.startswith(b"%PDF")
        bad = auditor.get("/v1/audit/report", params={"from": 10, "to": 5})
        assert bad.status_code == 400
        # the audit trail names who saw which faces
        seen = auditor.get("/v1/audit", params={"operation": "faces.crops"}).json()["events"]
        assert seen and all(e["results"][0][0] == face_id for e in seen)
    with s.native("searcher") as c:
        assert c.get("/v1/audit/report", params=period).status_code == 403
        # live views and snapshots of a processor that does not exist: not found
        assert c.get("/v1/streams/nope/live").status_code == 404
        assert c.get("/v1/streams/nope/events/00000000-0000-4000-8000-000000000000/"
                     "snapshot").status_code == 404
    with s.native("indexer") as c:
        assert c.get("/v1/streams/nope/live").status_code == 403


# -- collections, enrolment, search and review, audit, report, erasure -------------------------

def test_the_whole_job_in_a_browser(app_server: Server, browser: Browser) -> None:
    b, s = browser, app_server
    # The admin creates collections, a law-enforcement one too.
    sign_in(b, s, "admin")
    assert nav(b) == ["collections", "live"]
    assert b.visible("#page-collections") and b.visible("#coll-create")
    b.fill("#new-coll-name", "le-watch")
    b.check("#new-coll-le")
    b.click("#coll-create-button")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"le-watch\"]')")
    row = b.text("#coll-table tr[data-name='le-watch']")
    assert "yes" in row  # law enforcement
    b.wait("document.getElementById('coll-facts').innerText.includes('required for every')")
    b.fill("#new-coll-name", "people")
    b.click("#coll-create-button")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"people\"]')")
    assert not b.visible("#coll-upload")  # admins do not enrol

    # The indexer enrols four photos, with a progress bar, and sees them as thumbnails.
    sign_in(b, s, "indexer")
    assert nav(b) == ["collections"] and not b.visible("#coll-create")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"people\"] button')")
    b.click("#coll-table tr[data-name='people'] button")
    b.wait("!document.getElementById('coll-upload').hidden")
    b.upload("#upload-files", face("obama.jpg"), face("biden.jpg"), face(LIN_PHOTO),
             face("two_people.jpg"))
    b.click("#upload-button")
    b.wait("document.getElementById('upload-count').innerText.startsWith('Done')", 180)
    assert b.eval("document.getElementById('upload-progress').value") == 4
    log = b.text("#upload-log")
    # A photo's label names one person: two_people.jpg enrols its largest face only.
    assert "obama.jpg: 1 face enrolled" in log
    assert "two_people.jpg: 1 face enrolled, 1 left out (NOT_LABELLED_FACE)" in log
    b.wait("document.querySelectorAll('#face-grid li').length === 4")
    tiles = b.eval("""[...document.querySelectorAll('#face-grid li')].map(li =>
        [li.querySelector('.who').innerText, li.querySelector('img') &&
         li.querySelector('img').complete && li.querySelector('img').naturalWidth])""")
    assert [t[0] for t in tiles[:3]] == ["obama", "biden", "lin-manuel-miranda"]
    assert all(t[1] == 160 for t in tiles)

    # The searcher searches a probe: the right person's enrolled photo first.
    sign_in(b, s, "searcher")
    assert nav(b) == ["search", "video", "live"]
    b.wait("[...document.querySelectorAll('#collection option')].some(o => o.value === 'people')")
    b.fill("#collection", "people")
    b.wait("document.getElementById('collection-info').innerText.includes('Faces')")
    b.fill("#purpose", "fraud")
    b.fill("#case-ref", CASE)
    b.upload("#probe", face("obama2.jpg"))
    b.wait("document.getElementById('detect-status').innerText.includes('One face found')")
    b.click("#search-button")
    b.wait("!document.getElementById('results').hidden")
    first = b.eval("""(() => { const li = document.querySelector('#probe-results li.candidate');
        const imgs = [...li.querySelectorAll('.pair img')];
        return [li.dataset.externalId, imgs.map(i => i.complete && i.naturalWidth)]; })()""")
    assert first == ["obama", [160, 160]]
    b.fill("#c-0-0-note", "ear and hairline match")
    b.click("#c-0-0 .decision.confirmed")
    b.wait("document.getElementById('c-0-0-status').innerText.startsWith('Recorded')")
    search_id = b.eval("document.querySelector('#result-summary code').innerText")

    # The auditor finds the search and its review on the audit page, verifies, exports.
    sign_in(b, s, "auditor")
    assert nav(b) == ["audit", "report"]
    b.fill("#audit-case", CASE)
    b.click("#audit-search")
    b.wait("!!document.querySelector('#audit-table tr[data-operation=\"search.image\"] "
           ".review-list')")
    row = b.text("#audit-table tr[data-operation='search.image']")
    assert "confirmed" in row and "ear and hairline match" in row and "fraud" in row
    assert b.eval("document.querySelector('#audit-table tr[data-operation=\"review\"]') "
                  "!== null")
    assert search_id in b.text("#audit-table")
    b.click("#audit-verify")
    b.wait("document.getElementById('verify-result').innerText.includes('intact')")
    b.click("#audit-export-csv")
    b.wait("document.getElementById('audit-download').innerText.startsWith('Exported')")

    # The transparency report: the numbers and charts, and the PDF.
    b.go("report")
    b.wait("!document.getElementById('report-view').hidden")
    facts = b.text("#report-facts")
    assert "Searches\n1" in facts.replace("\t", "\n") or "Searches 1" in facts
    assert b.eval("document.querySelectorAll('#report-charts figure').length") == 9
    assert CASE not in b.text("#page-report")
    b.click("#report-pdf")
    b.wait("document.getElementById('report-status').innerText.startsWith('Downloaded')")

    # The indexer erases a person and gets the receipt.
    sign_in(b, s, "indexer")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"people\"] button')")
    b.click("#coll-table tr[data-name='people'] button")
    b.wait("!document.getElementById('coll-erase').hidden")
    b.fill("#erase-external-id", "biden")
    b.click("#erase-button")
    b.wait("!document.getElementById('receipt').hidden")
    receipt = b.text("#receipt-facts")
    assert "Faces erased\n1" in receipt and "Pictures (crops) erased\n1" in receipt
    b.wait("document.querySelectorAll('#face-grid li').length === 3")
    assert b.problems(s.url) == []


# -- video --------------------------------------------------------------------------------------

def test_video_timeline_shows_lin_in_a_browser(app_server: Server, browser: Browser) -> None:
    b, s = browser, app_server
    sign_in(b, s, "searcher")
    b.go("video")
    b.wait(f"[...document.querySelectorAll('#video-collection option')]"
           f".some(o => o.value === {json.dumps(WATCHLIST)})")
    b.fill("#video-collection", WATCHLIST)
    b.fill("#video-fps", "3")
    b.upload("#video-file", clip())
    b.click("#video-start")
    b.wait("!document.getElementById('video-result').hidden", 600)
    assert b.eval("document.getElementById('video-progress').value") == 100
    lin = b.eval(f"""(() => {{
        const li = document.querySelector('#timeline li[data-identity="{LIN}"]');
        const img = li && li.querySelector('img.thumb');
        return li && [li.querySelector('.cand').innerText, img && img.complete &&
                      img.naturalWidth > 0, li.querySelector('.track .span').style.width];
    }})()""")
    assert lin and lin[0].startswith(LIN) and lin[1] is True and lin[2].endswith("%")
    # Jump to the frame: the uploaded file itself, seeked, with the person's box.
    b.click(f"#timeline li[data-identity='{LIN}'] .jump")
    b.wait("!document.getElementById('player').hidden && "
           "document.getElementById('video-player').readyState >= 2 && "
           "!document.getElementById('video-player').seeking")
    # The player shows the very frame of the person's best view (its thumbnail's time).
    job_id = b.eval("document.querySelector('#video-jobs tbody tr').dataset.jobId")
    with s.native("searcher") as c:
        thumbs = c.get(f"/v1/video/jobs/{job_id}/thumbnails").json()["thumbnails"]
    lin_person = int(b.eval(f"document.querySelector('#timeline li[data-identity=\"{LIN}\"]')"
                            ".dataset.person"))
    at_ms = next(t["timestamp_ms"] for t in thumbs if t["person_index"] == lin_person)
    shown = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(b.eval(
        """(() => { const v = document.getElementById('video-player');
            const c = document.createElement('canvas'); c.width = 640; c.height = 360;
            c.getContext('2d').drawImage(v, 0, 0, 640, 360);
            return c.toDataURL('image/png').split(',')[1]; })()""")))).convert("RGB"),
                       np.float32)
    frames = [(f.timestamp_ms, f.pixels) for f in iter_frames(clip())]
    best = min(frames, key=lambda f: float(np.abs(shown - f[1]).mean()))[0]
    assert abs(best - at_ms) <= 40, (best, at_ms)
    b.wait("[...document.querySelectorAll('#video-boxes text')]"
           f".some(t => t.textContent.includes({json.dumps(LIN)}))")

    # A video named on the server: its frames come from the server.
    b.check("#video-src-path")
    b.fill("#video-path", str(clip()))
    b.click("#video-start")
    b.wait("!document.getElementById('video-result').hidden && "
           "document.getElementById('video-facts').innerText.includes('/')", 600)
    b.click(f"#timeline li[data-identity='{LIN}'] .jump")
    b.wait("!document.getElementById('video-frame').hidden && "
           "document.getElementById('video-frame').complete && "
           "document.getElementById('video-frame').naturalWidth === 640")
    assert b.visible("#video-frame") and not b.visible("#video-player")
    b.wait("[...document.querySelectorAll('#video-boxes text')]"
           f".some(t => t.textContent.includes({json.dumps(LIN)}))")
    assert b.eval("document.querySelectorAll('#video-jobs tbody tr').length") >= 2
    assert b.problems(s.url) == []


# -- live ---------------------------------------------------------------------------------------

def test_live_page_shows_an_event_from_the_clip_played_as_a_camera(app_server: Server,
                                                                    browser: Browser) -> None:
    b, s = browser, app_server
    sign_in(b, s, "searcher")
    b.go("live")
    b.wait(f"[...document.querySelectorAll('#proc-collection option')]"
           f".some(o => o.value === {json.dumps(WATCHLIST)})")
    b.fill("#proc-name", "stage-cam")
    b.fill("#proc-input", str(clip()))
    b.fill("#proc-collection", WATCHLIST)
    b.fill("#proc-purpose", "event security")
    b.fill("#proc-case", "CASE-LIVE-1")
    b.click("#proc-create-button")
    b.wait("!!document.querySelector('#proc-table tr[data-name=\"stage-cam\"]')")
    assert "STOPPED" in b.text("#proc-table tr[data-name='stage-cam'] .status")
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Start stage-cam']")
    b.wait("!!document.querySelector('#proc-table tr[data-name=\"stage-cam\"] "
           "button[aria-label=\"Stop stage-cam\"]')")
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Watch stage-cam']")
    # the live view: frames with boxes, and the name over Lin's face once he is matched
    b.wait("document.getElementById('live-img').complete && "
           "document.getElementById('live-img').naturalWidth === 640", 120)
    b.wait("[...document.querySelectorAll('#live-boxes text')]"
           f".some(t => t.textContent.startsWith({json.dumps(LIN)}))", 120)
    # the event feed, with the matched face's snapshot
    b.wait(f"!!document.querySelector('#feed li[data-identity=\"{LIN}\"] img.thumb') && "
           f"document.querySelector('#feed li[data-identity=\"{LIN}\"] img.thumb')"
           ".naturalWidth > 0", 120)
    assert "candidate for human review" in b.text(f"#feed li[data-identity='{LIN}']")
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Stop stage-cam']")
    b.wait("!!document.querySelector('#proc-table tr[data-name=\"stage-cam\"] "
           "button[aria-label=\"Start stage-cam\"]')", 60)
    with s.native("auditor") as auditor:
        ops = {e["operation"] for e in auditor.get(
            "/v1/audit", params={"operation": "stream.*"}).json()["events"]}
    assert {"stream.subscribe", "stream.live", "stream.snapshot.read"} <= ops
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Delete stage-cam']")
    b.wait("!document.querySelector('#proc-table tr[data-name=\"stage-cam\"]')")
    assert b.problems(s.url) == []
    with httpx.Client(base_url=s.url, timeout=30) as plain:
        assert plain.get("/v1/streams").status_code == 401
