"""The web app (``/ui/``): served without a key with the right content types and a strict
Content-Security-Policy, referencing nothing but its own server, and, end to end in headless
Chromium (driven over the DevTools protocol, tests/api/browser.py): sign in, choose a
collection, see what the threshold means, pick the probe's face, search a real photo, see the
candidates' enrolled faces, compare side by side, record a review, sign out. The other pages
are tests/api/test_web_app.py's.

The browser test needs Debian's ``chromium``; without it the test is skipped, except under CI
(``CI`` set), where it fails. ``FACESEARCH_UI_SCREENSHOT=/path.png`` keeps a screenshot of the
page after the search (``scripts/ui-smoke`` does that)."""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from facesearch.api import web

from ..conftest import face
from .browser import Browser, chromium_path, in_ci
from .conftest import Server, image_bytes

ASSET_TYPES = {
    "/ui/": "text/html",
    "/ui/index.html": "text/html",
    "/ui/style.css": "text/css",
    **{f"/ui/{name}": "text/javascript" for name in web.ASSETS if name.endswith(".js")},
}


def test_page_and_assets_are_served_without_a_key(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as plain:
        for path, ctype in ASSET_TYPES.items():
            r = plain.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"].split(";")[0] == ctype, path
            assert "charset=utf-8" in r.headers["content-type"]
            assert r.headers["x-content-type-options"] == "nosniff"
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        r = plain.get("/ui", follow_redirects=False)
        assert r.status_code == 308 and r.headers["location"] == "ui/"
        assert plain.get("/ui", follow_redirects=True).text.startswith("<!doctype html>")
        # nothing but the page's own files
        for path in ("/ui/nope.js", "/ui/web.py", "/ui/..%2Fapi%2Fweb.py", "/ui/%2e%2e"):
            r = plain.get(path)
            assert r.status_code == 404, path
            assert r.json()["code"] == "not_found"
        # the API behind it still wants a key
        assert plain.get("/v1/whoami").status_code == 401


def test_page_is_not_in_the_openapi_schema(server: Server) -> None:
    paths = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


def asset_text(name: str) -> str:
    return (Path(web.__file__).resolve().parents[1] / "web" / name).read_text()


def test_page_references_only_its_own_server() -> None:
    html, css = asset_text("index.html"), asset_text("style.css")
    scripts = {n: asset_text(n) for n in web.ASSETS if n.endswith(".js")}
    # Every file of the web folder is served (and nothing else is there).
    folder = Path(web.__file__).resolve().parents[1] / "web"
    assert {p.name for p in folder.iterdir() if p.is_file()} == set(web.ASSETS)
    # No absolute URL at all, except the SVG namespace name (an identifier, never fetched).
    for name, text in (("index.html", html), ("style.css", css), *scripts.items()):
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s'\"`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    # HTML: scripts, styles and icons from the page's own folder; links within the page.
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr in {"app.js", "style.css", "data:,"} or attr.startswith("#"), attr
    assert "<script>" not in html and " on" + "click=" not in html  # no inline script
    # CSS: nothing imported or loaded.
    assert "@import" not in css and "url(" not in css
    for name, js in scripts.items():
        # Modules import only the page's own files.
        for target in re.findall(r'from\s+"([^"]+)"', js):
            assert target.startswith("./") and target[2:] in web.ASSETS, (name, target)
        # Every API call is made through apiUrl(), relative to the page, checked same-origin.
        for call in re.findall(r"\bfetch\(([^,)]*)", js):
            assert call.strip().startswith("apiUrl("), (name, call)
        for call in re.findall(r"\.open\(\"POST\", ([^)]*)\)", js):
            assert call.strip().startswith("apiUrl("), (name, call)
        for path in re.findall(r'\b(?:api|apiBlob|sse|upload)\(\s*[`"]([^`"]*)', js):
            assert path.startswith("/v1/"), (name, path)
        # Nothing from the API is parsed as HTML.
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in js, (name, sink)
        # The key lives in the page's memory only: no storage of any kind.
        for store in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert store not in js, (name, store)
    assert "window.location.origin" in scripts["core.js"]


# -- end to end in headless Chromium --------------------------------------------------------

def chromium() -> str:
    path = chromium_path()
    if path is None:
        if in_ci():
            pytest.fail("chromium is not installed (Debian package chromium; "
                        "scripts/install-test-deps)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium(), tmp_path / "profile")
    yield b
    b.close()


@pytest.fixture(scope="module")
def ui_collection(server: Server) -> str:
    """A collection holding obama.jpg and biden.jpg whose policy requires purpose and case,
    with a floor of 70 and at most 20 candidates."""
    name = "web-ui"
    with server.native("admin") as admin:
        assert admin.post("/v1/collections", json={"name": name}).status_code == 201
        r = admin.put(f"/v1/collections/{name}/policy",
                      json={"require_purpose": True, "threshold_floor": 70,
                            "max_results_cap": 20})
        assert r.status_code == 200, r.text
    with server.native("indexer") as idx:
        for who in ("obama", "biden"):
            r = idx.post(f"/v1/collections/{name}/faces", data={"external_id": who},
                         files={"image": (f"{who}.jpg", image_bytes(f"{who}.jpg"), "image/jpeg")})
            assert r.status_code == 200 and r.json()["indexed"], r.text
    return name


@pytest.mark.slow
def test_search_and_review_in_a_browser(server: Server, ui_collection: str, browser: Browser,
                                        tmp_path: Path) -> None:
    b = browser
    key = server.keys["searcher"]
    b.navigate(f"{server.url}/ui/")
    assert b.visible("#signin") and not b.visible("#workspace")
    # signed out, the header shows no key, role or "Sign out" (`hidden` wins over the CSS)
    assert b.eval("getComputedStyle(document.getElementById('session')).display") == "none"

    # every form control has a label
    unlabelled = b.eval("""[...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !e.labels.length && !e.getAttribute('aria-label'))
        .map(e => e.id)""")
    assert unlabelled == []

    # a wrong secret: the API's refusal, readable
    b.fill("#key-id", key.key_id)
    b.fill("#key-secret", "not-the-secret")
    b.click("#sign-in")
    b.wait("!document.getElementById('signin-error').hidden")
    assert "the secret does not match the access key" in b.text("#signin-error")

    b.fill("#key-secret", key.secret)
    b.click("#sign-in")
    b.wait("!document.getElementById('workspace').hidden")
    assert b.text("#who-key") == key.key_id and b.text("#who-role") == "searcher"
    assert b.eval("sessionStorage.length") == 0 and b.eval("localStorage.length") == 0
    assert b.eval("document.getElementById('key-secret').value") == ""

    # the collection, its size and policy
    b.wait(f"[...document.querySelectorAll('#collection option')]"
           f".some(o => o.value === {json.dumps(ui_collection)})")
    b.fill("#collection", ui_collection)
    b.wait("document.getElementById('collection-info').innerText.includes('70.00')")
    info = b.text("#collection-info")
    assert "required for every search" in info and "at most 20" in info
    assert b.eval("document.getElementById('threshold-range').min") == "70"
    assert b.eval("document.getElementById('threshold').value") == "80"
    assert b.eval("document.getElementById('purpose').required") is True

    # the threshold's meaning, live
    b.fill("#threshold", "75")
    b.wait("document.getElementById('risk').innerText.includes('At similarity 75.00')")
    risk = b.text("#risk")
    assert "False-match rate (1:1)" in risk and "Expected FPIR" in risk
    assert f"{ui_collection}'s current 2 faces" in risk
    assert b.eval("document.getElementById('threshold-range').value") == "75"

    # the page itself refuses what the policy refuses, before asking the server
    b.fill("#threshold", "60")
    b.click("#search-button")
    b.wait("!document.getElementById('purpose-error').hidden")
    assert "requires a purpose" in b.text("#purpose-error")
    assert "floor of 70.00" in b.text("#threshold-error")
    assert "Choose a probe photo" in b.text("#probe-error")
    assert b.eval("document.activeElement.id") == "purpose"

    b.fill("#purpose", "burglary investigation")
    b.fill("#case-ref", "C-2026-41")
    b.fill("#threshold", "75")

    # an image without a face: the API's error, readable
    blank = tmp_path / "blank.png"
    buf = io.BytesIO()
    PILImage.new("RGB", (200, 200), (128, 128, 128)).save(buf, "PNG")
    blank.write_bytes(buf.getvalue())
    b.upload("#probe", blank)
    b.wait("!document.getElementById('preview').hidden")
    b.wait("document.getElementById('detect-status').innerText.includes('No face was found')")
    b.click("#search-button")
    b.wait("!document.getElementById('search-error').hidden")
    assert "No face was found" in b.text("#search-error")

    # a photo of two people: the page finds both and searches only the one picked
    b.upload("#probe", face("two_people.jpg"))
    b.wait("!document.getElementById('face-pick').hidden")
    # the previous photo's "no face" error went with it
    assert not b.visible("#search-error") and b.text("#search-error") == ""
    assert b.eval("[...document.querySelectorAll('#face-pick-options label')]"
                  ".map(l => l.innerText)") == ["Face 1 (the largest)", "Face 2",
                                                 "Every face in the photo"]
    assert b.eval("document.querySelectorAll('#boxes rect').length") == 2
    second = b.eval("[...document.querySelectorAll('#boxes rect')][1].getAttribute('x')")
    b.check("#pick-1")
    b.click("#search-button")
    b.wait("!document.getElementById('results').hidden")
    assert b.eval("document.querySelectorAll('#probe-results section.probe').length") == 1
    assert b.eval("document.querySelectorAll('#boxes rect').length") == 1
    assert b.eval("document.querySelector('#boxes rect').getAttribute('x')") == second

    # the real search
    b.upload("#probe", face("obama2.jpg"))
    b.wait("document.getElementById('preview-caption').innerText.startsWith('obama2.jpg')")
    b.wait("document.getElementById('preview-img').complete && "
           "document.getElementById('preview-img').naturalWidth > 0")
    b.click("#search-button")
    b.wait("!document.getElementById('results').hidden")
    assert b.text("#results-h") == "Candidates for human review — not identifications"
    assert b.eval("document.getElementById('search-error').hidden")
    summary = b.text("#result-summary")
    assert "C-2026-41" in summary and "75.00" in summary and "Expected FPIR at 2 faces" in summary
    assert not b.visible("#face-pick")  # one face: nothing to pick
    cards = b.eval("""[...document.querySelectorAll('#probe-results li.candidate')].map(li => [
        li.querySelector('.rank').innerText, li.dataset.externalId, Number(li.dataset.similarity),
        [...li.querySelectorAll('.pair img')].map(i => i.complete && i.naturalWidth)])""")
    assert cards[0][:2] == ["1", "obama"] and cards[0][2] > 90
    assert all(c[1] != "biden" for c in cards)
    # the candidate's enrolled face beside the probe's, both 160 px crops
    assert cards[0][3] == [160, 160]
    facts = b.text("#c-0-0 .cand-facts")
    assert "False-match risk at this score" in facts and "obama.jpg" in facts
    assert b.eval("document.querySelectorAll('#boxes rect').length") == 1
    assert b.eval("document.getElementById('boxes').getAttribute('viewBox')") == "0 0 626 1200"

    # one false-match rate, one text: the threshold panel (GET /v1/calibration/risk) and the
    # search's summary (the answer's rounded rate) say the same "1 in N"
    one_in = re.compile(r"about 1 in [\d,]+")
    panel = one_in.findall(b.text("#risk"))
    assert panel and panel[0] in b.text("#result-summary"), (b.text("#risk"),
                                                            b.text("#result-summary"))
    card_fmr = b.eval("[...document.querySelectorAll('#c-0-0 .cand-facts div')].find(d => "
                      "d.innerText.startsWith('False-match risk')).querySelector('dd').innerText")

    # side by side, at the same scale, with the landmarks on demand
    b.click("#c-0-0 .compare")
    b.wait("document.getElementById('compare').open")
    compare_fmr = b.eval("[...document.querySelectorAll('#compare-facts div')].find(d => "
                         "d.innerText.startsWith('False-match risk')).querySelector('dd')"
                         ".innerText")
    assert compare_fmr == card_fmr and "(extrapolated)" in compare_fmr  # obama at 99+
    assert b.eval("document.querySelectorAll('#compare .marks circle').length") == 0
    b.check("#compare-landmarks")
    assert b.eval("document.querySelectorAll('#compare-probe-marks circle').length") == 5
    assert b.eval("document.querySelectorAll('#compare-candidate-marks circle').length") == 5
    sizes = b.eval("[...document.querySelectorAll('#compare img')]"
                   ".map(i => [i.getBoundingClientRect().width, i.naturalWidth])")
    assert sizes[0] == sizes[1] and sizes[0][1] == 160
    # The eyes sit at about the same place in both crops: the same framing, the same scale.
    eyes = b.eval("""['compare-probe-marks', 'compare-candidate-marks'].map(id =>
        [...document.getElementById(id).querySelectorAll('circle')].slice(0, 2)
        .map(c => [Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))]))""")
    for a, c in zip(eyes[0], eyes[1], strict=True):
        assert abs(a[0] - c[0]) < 20 and abs(a[1] - c[1]) < 20, eyes
    b.click("#compare-close")
    b.wait("!document.getElementById('compare').open")

    # a review, recorded with the search id
    b.fill("#c-0-0-note", "same ear shape; checked by two analysts")
    b.click("#c-0-0 .decision.confirmed")
    b.wait("document.getElementById('c-0-0-status').innerText.startsWith('Recorded: confirmed')")

    # what a threshold means
    b.eval("document.getElementById('helper').open = true")
    b.fill("#target-fpir", "0.1")
    b.fill("#gallery-size", "300000")
    b.click("#helper-form button[type=submit]")
    b.wait("document.getElementById('helper-answer').innerText.includes('A threshold of')")
    assert "300,000 faces" in b.text("#helper-answer")

    shot = os.environ.get("FACESEARCH_UI_SCREENSHOT")
    b.eval("window.scrollTo(0, 0)")
    b.screenshot(Path(shot) if shot else tmp_path / "ui.png")

    # the server saw the search's purpose and case, and the review
    search_id = b.eval("document.querySelector('#result-summary code').innerText")
    with server.native("auditor") as auditor:
        reviews = auditor.get("/v1/audit", params={"operation": "review"}).json()["events"]
        mine = [e for e in reviews if e["details"].get("search_id") == search_id]
        assert mine and mine[-1]["details"]["decision"] == "confirmed"
        assert mine[-1]["details"]["note"] == "same ear shape; checked by two analysts"
        # The search, and its review, under the search's case.
        case = auditor.get("/v1/audit", params={"case": "C-2026-41"}).json()["events"]
        mine = [e for e in case if e["details"].get("search_id") == search_id]
        assert [e["operation"] for e in mine] == ["search.image", "review"]
        assert (mine[0]["purpose"], mine[0]["threshold"]) == ("burglary investigation", 75.0)
        both = auditor.get("/v1/audit", params={"search_id": search_id}).json()["events"]
        assert [e["seq"] for e in both] == [e["seq"] for e in mine]

    # a refusal by the server (the policy changed since the page read it): its text, readable
    with server.native("admin") as admin:
        r = admin.put(f"/v1/collections/{ui_collection}/policy",
                      json={"require_purpose": True, "threshold_floor": 90,
                            "max_results_cap": 20})
        assert r.status_code == 200, r.text
    b.click("#search-button")
    b.wait("!document.getElementById('search-error').hidden")
    assert "threshold 75 is below this collection's floor of 90.00" in b.text("#search-error")
    assert not b.visible("#results")
    b.wait("document.getElementById('collection-info').innerText.includes('90.00')")
    assert b.eval("document.getElementById('threshold').value") == "75"  # never raised
    assert "floor of 90.00" in b.text("#threshold-error")

    # signing out forgets the key, and hides the header's key and role
    b.click("#sign-out")
    assert b.visible("#signin") and not b.visible("#workspace")
    assert b.eval("getComputedStyle(document.getElementById('session')).display") == "none"
    # the key is kept in memory only: a reload asks for it again
    b.fill("#key-id", key.key_id)
    b.fill("#key-secret", key.secret)
    b.click("#sign-in")
    b.wait("!document.getElementById('workspace').hidden")
    b.navigate(f"{server.url}/ui/")
    assert b.visible("#signin") and not b.visible("#workspace")
    assert b.eval("sessionStorage.length") == 0
    time.sleep(1)  # answers still in flight at sign-out are dropped, not rendered

    # nothing but this server was asked for anything; no script error, no policy violation
    assert any(e["method"] == "Network.requestWillBeSent" for e in b.events)
    assert b.problems(server.url) == []
