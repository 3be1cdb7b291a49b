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

from facesearch.video.frames import iter_frames

from ..conftest import FACES, LFW, face
from ..media.video_helpers import ALEX_PHOTO, LIN, LIN_PHOTO, clip
from .browser import Browser, chromium_path, in_ci
from .conftest import Server, image_bytes, start_server, stop_server

pytestmark = pytest.mark.slow  # a server of its own and a browser

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


def test_root_leads_to_the_app_and_the_server_logs_its_address(app_server: Server) -> None:
    s = app_server
    with httpx.Client(base_url=s.url, timeout=30) as plain:
        r = plain.get("/")
        assert r.status_code == 302 and r.headers["location"] == "/ui/"
        # POST / stays the Rekognition endpoint (unsigned: refused in its own error shape)
        rek = plain.post("/", headers={"X-Amz-Target": "RekognitionService.ListCollections",
                                       "Content-Type": "application/x-amz-json-1.1"},
                         content=b"{}")
        assert rek.status_code in (400, 403) and "__type" in rek.json()
    logged = [json.loads(line) for line in s.log.read_text().splitlines()
              if line.startswith("{") and "web_app" in line]
    assert logged and logged[0]["web_app"] == f"{s.url}/ui/", s.log.read_text()[-2000:]


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
    # Data-URL images decode asynchronously: wait for every tile's picture to be decoded.
    b.wait("[...document.querySelectorAll('#face-grid li')].every(li => "
           "li.querySelector('img') && li.querySelector('img').complete && "
           "li.querySelector('img').naturalWidth > 0)")
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
    b.wait("[...document.querySelectorAll('#probe-results li.candidate .pair img')]"
           ".every(i => i.complete && i.naturalWidth > 0)")  # decoded asynchronously
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
    assert b.eval("document.querySelectorAll('#report-charts figure').length") == 10
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
    b.wait("[...document.querySelectorAll('#timeline img.thumb')]"
           ".every(i => i.complete && i.naturalWidth > 0)")  # decoded asynchronously
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
    # "Jump to" is named for screen readers by what it shows
    jump = b.eval(f"document.querySelector('#timeline li[data-identity=\"{LIN}\"] .jump')"
                  ".getAttribute('aria-label')")
    assert jump is None

    # A decision on Lin's candidate, recorded and audited as for a photo search.
    lin_cand = f"#timeline li[data-identity='{LIN}'] .vcand"
    lin_face = b.eval(f"document.querySelector({json.dumps(lin_cand)}).dataset.faceId")
    b.fill(f"{lin_cand} input.note", "same man, stage left")
    b.click(f"{lin_cand} .decision.confirmed")
    b.wait(f"document.querySelector({json.dumps(lin_cand)} + ' .review-status').innerText"
           ".startsWith('Recorded: confirmed')")

    # On a phone the page is no wider than the screen.
    b.viewport(390, 844, mobile=True)
    b.wait("document.documentElement.scrollWidth <= 390")
    b.viewport(1280, 800)

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

    # Signed in again, the uploaded job's file is gone from the page and from the server:
    # the page says so plainly, and the timeline stays.
    sign_in(b, s, "searcher")
    b.go("video")
    b.wait(f"!!document.querySelector('#video-jobs tr[data-job-id=\"{job_id}\"] button')")
    b.click(f"#video-jobs tr[data-job-id='{job_id}'] button")
    b.wait(f"!!document.querySelector('#timeline li[data-identity=\"{LIN}\"] .jump')")
    b.click(f"#timeline li[data-identity='{LIN}'] .jump")
    b.wait("document.getElementById('player-caption').innerText.includes('no longer kept')")
    assert not b.visible("#video-stage") and job_id not in b.text("#player-caption")

    # The auditor sees the review beside the video search, and the report counts it.
    sign_in(b, s, "auditor")
    b.fill("#audit-operation", "search.video")
    b.click("#audit-search")
    b.wait(f"!!document.querySelector('#audit-table tr[data-operation=\"search.video\"]"
           f"[data-search-id=\"{job_id}\"] .review-list')")
    row = b.text(f"#audit-table tr[data-operation='search.video'][data-search-id='{job_id}']")
    assert "confirmed" in row and "same man, stage left" in row
    assert "test searcher" in row  # the key's label, not only its id
    with s.native("auditor") as auditor:
        report = auditor.get("/v1/audit/report", params={"from": 0, "to": 4_000_000_000}).json()
        reviews = auditor.get("/v1/audit", params={"search_id": job_id,
                                                   "operation": "review"}).json()["events"]
    assert [(e["results"][0][0], e["details"]["decision"]) for e in reviews] == \
        [(lin_face, "confirmed")]
    outcomes = {t["label"]: t["count"] for t in report["review_outcomes"]}
    assert outcomes.get("confirmed", 0) >= 1
    b.go("report")
    b.wait("!document.getElementById('report-view').hidden")
    reviewed = b.eval("[...document.querySelectorAll('#report-facts div')].find(d => "
                      "d.innerText.startsWith('Candidates reviewed')).innerText")
    assert int(reviewed.split("\n")[1].split(" of ")[0]) == sum(
        v for k, v in outcomes.items() if k != "never reviewed") >= 1


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
    # a decision on the match, recorded as a review of the processor run's search
    event = f"#feed li[data-identity='{LIN}']"
    run_id, matched = b.eval(f"(() => {{ const li = document.querySelector({json.dumps(event)});"
                             " return [li.dataset.searchId, li.dataset.faceId]; })()")
    b.fill(f"{event} input.note", "seen at the stage door")
    b.click(f"{event} .decision.rejected")
    b.wait(f"document.querySelector({json.dumps(event)} + ' .review-status').innerText"
           ".startsWith('Recorded: rejected')")
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Stop stage-cam']")
    b.wait("!!document.querySelector('#proc-table tr[data-name=\"stage-cam\"] "
           "button[aria-label=\"Start stage-cam\"]')", 60)
    with s.native("auditor") as auditor:
        ops = {e["operation"] for e in auditor.get(
            "/v1/audit", params={"operation": "stream.*"}).json()["events"]}
    assert {"stream.subscribe", "stream.live", "stream.snapshot.read"} <= ops
    with s.native("auditor") as auditor:
        reviews = auditor.get("/v1/audit", params={"search_id": run_id,
                                                   "operation": "review"}).json()["events"]
        report = auditor.get("/v1/audit/report", params={"from": 0, "to": 4_000_000_000}).json()
    assert [(e["results"][0][0], e["details"]["decision"], e["details"]["note"])
            for e in reviews] == [(matched, "rejected", "seen at the stage door")]
    live = {t["label"]: t["count"] for t in report["stream_review_outcomes"]}
    assert live["rejected"] == 1 and sum(live.values()) >= 1
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Delete stage-cam']")
    b.wait("!document.querySelector('#proc-table tr[data-name=\"stage-cam\"]')")
    assert b.problems(s.url) == []
    with httpx.Client(base_url=s.url, timeout=30) as plain:
        assert plain.get("/v1/streams").status_code == 401


# -- persons ------------------------------------------------------------------------------------

PERSON = "Paul_Wolfowitz"


def test_a_person_of_three_photos_is_found_as_one_person(app_server: Server,
                                                          browser: Browser) -> None:
    """An indexer creates a person, enrols three photos to them and sees their faces; a
    searcher's fourth photo of the same man finds the person once, with his best face beside
    the probe; the indexer erases the person and gets the receipt."""
    b, s = browser, app_server
    photos = sorted((LFW / "images" / PERSON).glob("*.jpg"))[:4]
    with s.native("admin") as admin:
        assert admin.post("/v1/collections", json={"name": "records"}).status_code == 201
    sign_in(b, s, "indexer")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"records\"] button')")
    b.click("#coll-table tr[data-name='records'] button")
    b.wait("!document.getElementById('coll-persons').hidden")
    b.fill("#person-id", "Paul Wolfowitz")  # a space becomes '_'
    b.click("#person-create")
    b.wait(f"!document.getElementById('person-detail').hidden && "
           f"document.getElementById('person-h').innerText.includes({json.dumps(PERSON)})")
    # two photos of the person and, by mistake, a photo of two other people
    b.upload("#person-files", *photos[:3], face("two_people.jpg"))
    b.click("#person-upload")
    b.wait("document.getElementById('person-upload-status').innerText.startsWith('Done')", 240)
    log = b.text("#person-log")
    assert log.count("1 face added to Paul_Wolfowitz") == 3, log
    assert f"two_people.jpg: not added to {PERSON}" in log and "LOW_MATCH_CONFIDENCE" in log
    b.wait("document.querySelectorAll('#person-faces li').length === 3")
    b.wait("[...document.querySelectorAll('#person-faces li img')]"
           ".every(i => i.complete && i.naturalWidth > 100)")
    assert "3" in b.text(f"#person-table tr[data-person='{PERSON}']")
    with s.native("indexer") as idx:
        faces = idx.get("/v1/collections/records/faces").json()["faces"]
    assert len(faces) == 3 and {f["user_id"] for f in faces} == {PERSON}  # the stray erased

    # a fourth photo finds him as one person
    sign_in(b, s, "searcher")
    b.wait("[...document.querySelectorAll('#collection option')].some(o => o.value === "
           "'records')")
    b.fill("#collection", "records")
    b.wait("document.getElementById('collection-info').innerText.includes('Faces')")
    b.fill("#threshold", "60")
    b.upload("#probe", photos[3])
    b.wait("document.getElementById('detect-status').innerText.includes('found')")
    b.click("#search-button")
    b.wait("!document.getElementById('results').hidden")
    b.wait("[...document.querySelectorAll('#probe-results li.candidate .pair img')]"
           ".every(i => i.complete && i.naturalWidth > 0)")  # decoded asynchronously
    cards = b.eval("""[...document.querySelectorAll('#probe-results li.candidate')].map(li =>
        [li.dataset.person, Number(li.dataset.faces),
         [...li.querySelectorAll('.pair img')].map(i => i.complete && i.naturalWidth > 100)])""")
    assert cards == [[PERSON, 3, [True, True]]]
    assert f"{PERSON}'s best face" in b.text("#c-0-0 .pair")
    assert "3 of their faces matched" in b.text("#c-0-0")
    sims = [float(x) for x in b.eval("document.querySelector('#c-0-0 .person-id').innerText")
            .split("matched: ")[1].split(";")[0].split(", ")]
    assert sims == sorted(sims, reverse=True)
    assert float(b.eval("document.querySelector('#c-0-0').dataset.similarity")) == sims[0]

    # the indexer erases the person: every face, with the receipt
    sign_in(b, s, "indexer")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"records\"] button')")
    b.click("#coll-table tr[data-name='records'] button")
    b.wait(f"!!document.querySelector('#person-table tr[data-person=\"{PERSON}\"] button')")
    b.click(f"#person-table tr[data-person='{PERSON}'] button")
    b.wait("document.querySelectorAll('#person-faces li').length === 3")
    b.click("#person-erase")
    b.wait("!document.getElementById('person-receipt').hidden")
    receipt = b.text("#person-receipt-facts")
    assert "Faces erased\n3" in receipt and "Pictures (crops) erased\n3" in receipt
    b.wait(f"!document.querySelector('#person-table tr[data-person=\"{PERSON}\"]')")
    with s.native("indexer") as idx:
        assert idx.get("/v1/collections/records/faces").json()["faces"] == []
        assert idx.get("/v1/collections/records/users").json()["users"] == []
    assert b.problems(s.url) == []
