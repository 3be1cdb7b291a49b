"""Screenshots of every page of the web app at desktop (1280x800) and phone (390x844) sizes.

Starts ``facesearch serve`` on a temporary data directory, fills it with the test photos and
clip (../shared/testdata), walks through each page in headless Chromium as the role that uses
it, and saves PNGs in docs/screenshots/ (or the folder given). Run it with
``scripts/ui-screenshots [FOLDER]``.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image as PILImage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the test helpers drive the browser and start the server
    sys.path.insert(0, str(REPO))
tests_browser = importlib.import_module("tests.api.browser")
tests_api = importlib.import_module("tests.api.conftest")
DESKTOP, PHONE = tests_browser.DESKTOP, tests_browser.PHONE
Browser, chromium_path = tests_browser.Browser, tests_browser.chromium_path
Server, image_bytes = tests_api.Server, tests_api.image_bytes
start_server, stop_server = tests_api.start_server, tests_api.stop_server
FACES = importlib.import_module("tests.conftest").FACES
LFW = importlib.import_module("tests.conftest").LFW

PEOPLE = ["obama.jpg", "biden.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png",
          "two_people.jpg"]
CLIP = FACES / "short_hamilton_clip.mp4"
LIN = "lin-manuel-miranda"
PERSON = "Paul_Wolfowitz"  # four lfw-dev photos: three enrolled, the fourth searched
MAX_HEIGHT = {"desktop": 1500, "phone": 2600}


def prepare(server: Server) -> None:
    """Collections to show: ``people`` (five photos), ``stage-watch`` (Lin-Manuel Miranda and
    Alex Lacamoire) and the law-enforcement ``case-files`` (two photos)."""
    with server.native("admin") as admin:
        admin.post("/v1/collections", json={"name": "people"}).raise_for_status()
        admin.post("/v1/collections", json={"name": "stage-watch"}).raise_for_status()
        admin.post("/v1/collections", json={"name": "case-files", "policy": {
            "law_enforcement": True, "retention_days": 365}}).raise_for_status()
    with server.native("indexer") as idx:
        for coll, photos in (("people", PEOPLE), ("stage-watch", PEOPLE[2:4]),
                             ("case-files", PEOPLE[:2])):
            for photo in photos:
                idx.post(f"/v1/collections/{coll}/faces",
                         data={"external_id": Path(photo).stem},
                         files={"image": (photo, image_bytes(photo))}).raise_for_status()


class Shooter:
    def __init__(self, browser: Browser, out: Path) -> None:
        self.b = browser
        self.out = out

    def shoot(self, name: str, top: str | None = None,
              ready: Callable[[], None] | None = None) -> None:
        """Save ``name``-desktop.png and ``name``-phone.png: the page from ``top`` (a CSS
        selector; default the top of the page), as tall as it is up to a limit."""
        for size, (w, h) in (("desktop", DESKTOP), ("phone", PHONE)):
            self.b.viewport(w, h, mobile=size == "phone")
            if ready is not None:
                ready()
            wide = self.b.eval("document.documentElement.scrollWidth")
            if wide > w:
                raise SystemExit(f"ui-screenshots: {name} is {wide} px wide on a {w} px screen")
            y = 0 if top is None else self.b.eval(
                f"Math.max(0, document.querySelector({json.dumps(top)})"
                ".getBoundingClientRect().top + window.scrollY - 8)")
            metrics = self.b.send("Page.getLayoutMetrics")["cssContentSize"]
            height = min(metrics["height"] - y, MAX_HEIGHT[size])
            shot = self.b.send("Page.captureScreenshot", format="png",
                               captureBeyondViewport=True,
                               clip={"x": 0, "y": y, "width": w, "height": height, "scale": 1})
            png = PILImage.open(io.BytesIO(base64.b64decode(shot["data"])))
            path = self.out / f"{name}-{size}.png"
            png.convert("RGB").save(path, optimize=True)
            print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
                  f"{png.width}x{png.height}")
        self.b.viewport(*DESKTOP)

    def modal(self, name: str) -> None:
        """The viewport as it is (a dialog over the page)."""
        for size, (w, h) in (("desktop", DESKTOP), ("phone", PHONE)):
            self.b.viewport(w, h, mobile=size == "phone")
            shot = self.b.send("Page.captureScreenshot", format="png")
            png = PILImage.open(io.BytesIO(base64.b64decode(shot["data"])))
            path = self.out / f"{name}-{size}.png"
            png.convert("RGB").save(path, optimize=True)
            print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
                  f"{png.width}x{png.height}")
        self.b.viewport(*DESKTOP)


def sign_in(b: Browser, server: Server, role: str) -> None:
    key = server.keys[role]
    if b.visible("#workspace"):
        b.click("#sign-out")
    b.fill("#key-id", key.key_id)
    b.fill("#key-secret", key.secret)
    b.click("#sign-in")
    b.wait("!document.getElementById('workspace').hidden")


def run(out: Path) -> None:
    exe = chromium_path()
    if exe is None:
        raise SystemExit("ui-screenshots: chromium is not installed (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facesearch-ui-") as tmp:
        root = Path(tmp)
        server = start_server(root / "home", root / "server.log",
                              FACESEARCH_API_VIDEO_PATH_ROOTS=str(FACES))
        b = Browser(exe, root / "profile")
        try:
            b.send("Page.setDownloadBehavior", behavior="deny")
            prepare(server)
            walk(b, server, Shooter(b, out))
        finally:
            b.close()
            stop_server(server)


def walk(b: Browser, server: Server, s: Shooter) -> None:
    b.navigate(f"{server.url}/ui/")
    s.shoot("signin")

    # Search and review (searcher).
    sign_in(b, server, "searcher")
    b.wait("[...document.querySelectorAll('#collection option')].some(o => o.value === 'people')")
    b.fill("#collection", "people")
    b.wait("document.getElementById('risk').innerText.includes('At similarity')")
    b.fill("#purpose", "fraud investigation")
    b.fill("#case-ref", "2026-0042")
    b.upload("#probe", FACES / "two_people.jpg")
    b.wait("!document.getElementById('face-pick').hidden")
    s.shoot("search")
    b.upload("#probe", FACES / "obama2.jpg")
    b.wait("document.getElementById('detect-status').innerText.includes('One face')")
    b.click("#search-button")
    b.wait("!document.getElementById('results').hidden")
    b.wait("[...document.querySelectorAll('#probe-results img')].every(i => i.complete)")
    b.fill("#c-0-0-note", "same ear shape and hairline")
    b.click("#c-0-0 .decision.confirmed")
    b.wait("document.getElementById('c-0-0-status').innerText.startsWith('Recorded')")
    s.shoot("search-results", "#results")
    b.click("#c-0-0 .compare")
    b.check("#compare-landmarks")
    b.wait("document.getElementById('compare').open")
    s.modal("compare")
    b.click("#compare-close")

    # Video (searcher): the clip uploaded from the page.
    b.go("video")
    b.wait("[...document.querySelectorAll('#video-collection option')]"
           ".some(o => o.value === 'stage-watch')")
    b.fill("#video-collection", "stage-watch")
    b.fill("#video-purpose", "event security")
    b.fill("#video-case", "2026-0043")
    b.upload("#video-file", CLIP)
    b.click("#video-start")
    b.wait("!document.getElementById('video-result').hidden", 600)
    # Lin's longest close-up.
    b.eval(f"""[...document.querySelectorAll('#timeline li[data-identity="{LIN}"]')]
        .sort((a, b) => parseFloat(b.querySelector('.span').style.width) -
                        parseFloat(a.querySelector('.span').style.width))[0]
        .querySelector('.jump').click()""")
    b.wait("document.getElementById('video-player').readyState >= 2 && "
           "!document.getElementById('video-player').seeking && "
           "document.querySelectorAll('#video-boxes rect').length > 0")
    lin_cand = f"#timeline li[data-identity='{LIN}'] .vcand"
    b.fill(f"{lin_cand} input.note", "same man, stage left")
    b.click(f"{lin_cand} .decision.confirmed")
    b.wait(f"document.querySelector({json.dumps(lin_cand)} + ' .review-status').innerText"
           ".startsWith('Recorded')")
    s.shoot("video", "#video-result")

    # Live (searcher): the clip played as a camera.
    b.go("live")
    b.wait("[...document.querySelectorAll('#proc-collection option')]"
           ".some(o => o.value === 'stage-watch')")
    b.fill("#proc-name", "stage-cam")
    b.fill("#proc-input", str(CLIP))
    b.fill("#proc-collection", "stage-watch")
    b.fill("#proc-purpose", "event security")
    b.fill("#proc-case", "2026-0043")
    b.click("#proc-create-button")
    b.wait("!!document.querySelector('#proc-table tr[data-name=\"stage-cam\"]')")
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Start stage-cam']")
    b.wait("!!document.querySelector('#proc-table button[aria-label=\"Watch stage-cam\"]')")
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Watch stage-cam']")
    b.wait(f"!!document.querySelector('#feed li[data-identity=\"{LIN}\"] img.thumb')", 180)
    named = ("[...document.querySelectorAll('#live-boxes text')]"
             f".some(t => t.textContent.startsWith({json.dumps(LIN)}))")
    b.wait(named, 180)
    event = f"#feed li[data-identity='{LIN}']"
    b.click(f"{event} .decision.confirmed")
    b.wait(f"document.querySelector({json.dumps(event)} + ' .review-status').innerText"
           ".startsWith('Recorded')")
    b.eval("document.getElementById('live-reload').click()")
    s.shoot("live", ready=lambda: b.wait(named, 180))
    b.click("#proc-table tr[data-name='stage-cam'] button[aria-label='Stop stage-cam']")

    # Collections (indexer): a collection's faces as thumbnails, an erasure's receipt.
    sign_in(b, server, "indexer")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"people\"] button')")
    b.click("#coll-table tr[data-name='people'] button")
    b.wait("document.querySelectorAll('#face-grid li img').length >= 5")
    b.fill("#erase-external-id", "biden")
    b.click("#erase-button")
    b.wait("!document.getElementById('receipt').hidden")
    b.wait("[...document.querySelectorAll('#face-grid img')].every(i => i.complete) && "
           "document.getElementById('faces-status').innerText.startsWith('Faces')")
    s.shoot("collections", "#coll-detail")

    # Persons (indexer): a person of three photos; then a fourth photo searched (searcher).
    photos = sorted((LFW / "images" / PERSON).glob("*.jpg"))[:4]
    b.fill("#person-id", PERSON)
    b.click("#person-create")
    b.wait("!document.getElementById('person-detail').hidden")
    b.upload("#person-files", *photos[:3])
    b.click("#person-upload")
    b.wait("document.getElementById('person-upload-status').innerText.startsWith('Done')", 240)
    b.wait("document.querySelectorAll('#person-faces li img').length === 3 && "
           "[...document.querySelectorAll('#person-faces img')].every(i => i.complete)")
    b.wait("document.getElementById('faces-status').innerText === 'Faces 1-8'")
    s.shoot("persons", "#coll-persons")
    sign_in(b, server, "searcher")
    b.wait("[...document.querySelectorAll('#collection option')].some(o => o.value === 'people')")
    b.fill("#collection", "people")
    b.wait("document.getElementById('risk').innerText.includes('At similarity')")
    b.fill("#threshold", "60")
    b.fill("#purpose", "records check")
    b.fill("#case-ref", "2026-0044")
    b.upload("#probe", photos[3])
    b.wait("document.getElementById('detect-status').innerText.includes('One face')")
    b.click("#search-button")
    b.wait("!document.getElementById('results').hidden")
    b.wait("[...document.querySelectorAll('#probe-results img')].every(i => i.complete)")
    s.shoot("search-person", "#results")

    # Collections (admin): create, with a law-enforcement policy.
    sign_in(b, server, "admin")
    b.wait("!!document.querySelector('#coll-table tr[data-name=\"stage-watch\"]')")
    s.shoot("collections-admin")

    # Audit and the transparency report (auditor).
    sign_in(b, server, "auditor")
    b.fill("#audit-case", "2026-0042")
    b.click("#audit-search")
    b.wait("!!document.querySelector('#audit-table .review-list')")
    b.click("#audit-verify")
    b.wait("document.getElementById('verify-result').innerText.includes('intact')")
    s.shoot("audit")
    b.go("report")
    b.wait("!document.getElementById('report-view').hidden")
    s.shoot("report")


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshots")
