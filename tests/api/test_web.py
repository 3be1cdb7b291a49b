"""The analyst web page (``/ui/``): served without a key with the right content types and a
strict Content-Security-Policy, referencing nothing but its own server, and, end to end in
headless Chromium (driven over the DevTools protocol with ``websockets``): sign in, choose a
collection, see what the threshold means, search a real photo, record a review, sign out.

The browser test needs Debian's ``chromium``; without it the test is skipped, except under CI
(``CI`` set), where it fails. ``FACESEARCH_UI_SCREENSHOT=/path.png`` keeps a screenshot of the
page after the search (``scripts/ui-smoke`` does that)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from facesearch.api import web

from ..conftest import face
from .conftest import Server, image_bytes

ASSET_TYPES = {
    "/ui/": "text/html",
    "/ui/index.html": "text/html",
    "/ui/app.js": "text/javascript",
    "/ui/style.css": "text/css",
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
    html, js, css = (asset_text(n) for n in ("index.html", "app.js", "style.css"))
    # No absolute URL at all, except the SVG namespace name (an identifier, never fetched).
    for name, text in (("index.html", html), ("app.js", js), ("style.css", css)):
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s'\"`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    # HTML: scripts, styles and icons from the page's own folder.
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr in {"app.js", "style.css", "data:,", "#main"}, attr
    # CSS: nothing imported or loaded.
    assert "@import" not in css and "url(" not in css
    # JS: every API call is made through apiUrl(), relative to the page, checked same-origin.
    for call in re.findall(r"\bfetch\(([^,)]*)", js):
        assert call.strip().startswith("apiUrl("), call
    assert "window.location.origin" in js
    for path in re.findall(r'api\(\s*[`"]([^`"]*)', js):
        assert path.startswith("/v1/"), path
    # Nothing from the API is parsed as HTML.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    # The key lives in sessionStorage only.
    assert "localStorage" not in js and "document.cookie" not in js


# -- end to end in headless Chromium --------------------------------------------------------

def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (Debian package chromium; scripts/install-test-deps)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


class Browser:
    """Just enough of the Chrome DevTools protocol: evaluate, wait, upload, screenshot."""

    def __init__(self, executable: str, profile: Path) -> None:
        from websockets.sync.client import connect

        profile.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        self.stack = ExitStack()
        self.ws = self.stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Network", "Log", "DOM"):
            self.send(f"{domain}.enable")

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.eval("document.body.innerText")
                raise AssertionError(f"timed out waiting for {expression}; the page says:\n{text}")
            time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && "
                  "document.documentElement.dataset.ready === 'true'")

    def fill(self, selector: str, value: str) -> None:
        self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.value = {json.dumps(value)};
            e.dispatchEvent(new Event('input', {{bubbles: true}}));
            e.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def text(self, selector: str) -> str:
        return str(self.eval(f"document.querySelector({json.dumps(selector)}).innerText"))

    def visible(self, selector: str) -> bool:
        return bool(self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                              " return !!e && !e.closest('[hidden]'); })()"))

    def upload(self, selector: str, path: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(path)])

    def screenshot(self, path: Path) -> None:
        import base64

        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"],
                               "height": size["height"], "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium_path(), tmp_path / "profile")
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


def test_search_and_review_in_a_browser(server: Server, ui_collection: str, browser: Browser,
                                        tmp_path: Path) -> None:
    b = browser
    key = server.keys["searcher"]
    b.navigate(f"{server.url}/ui/")
    assert b.visible("#signin") and not b.visible("#workspace")

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
    assert b.eval("JSON.parse(sessionStorage.getItem('facesearch.key')).id") == key.key_id
    assert b.eval("localStorage.length") == 0
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
    b.click("#search-button")
    b.wait("!document.getElementById('search-error').hidden")
    assert "No face was found" in b.text("#search-error")

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
    rows = b.eval("""[...document.querySelectorAll('table.candidates tbody tr')]
        .map(tr => [...tr.cells].slice(0, 4).map(td => td.innerText))""")
    assert rows[0][0] == "1" and rows[0][2] == "obama" and float(rows[0][1]) > 90
    assert all(r[2] != "biden" for r in rows)
    assert b.eval("document.querySelectorAll('#boxes rect').length") == 1
    assert b.eval("document.getElementById('boxes').getAttribute('viewBox')") == "0 0 626 1200"

    # a review, recorded with the search id
    b.fill("#c-0-0-note", "same ear shape; checked by two analysts")
    b.click("#results tbody tr:first-child .decision.confirmed")
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
        searches = auditor.get("/v1/audit", params={"case": "C-2026-41"}).json()["events"]
        mine = [e for e in searches if e["details"].get("search_id") == search_id]
        assert len(mine) == 1 and mine[0]["operation"] == "search.image"
        assert (mine[0]["purpose"], mine[0]["threshold"]) == ("burglary investigation", 75.0)

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

    # a reload keeps the session (this tab only); signing out forgets the key
    b.navigate(f"{server.url}/ui/")
    assert b.visible("#workspace") and b.text("#who-key") == key.key_id
    b.click("#sign-out")
    assert b.visible("#signin") and not b.visible("#workspace")
    assert b.eval("sessionStorage.getItem('facesearch.key')") is None
    time.sleep(1)  # answers still in flight at sign-out are dropped, not rendered

    # nothing but this server was asked for anything; no script error, no policy violation
    urls = [e["params"]["request"]["url"] for e in b.events
            if e["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith((server.url + "/", "blob:", "data:"))
                        for u in urls), urls
    assert not [e for e in b.events if e["method"] == "Runtime.exceptionThrown"]
    problems = [e["params"]["entry"] for e in b.events if e["method"] == "Log.entryAdded"
                and e["params"]["entry"]["level"] == "error"
                and e["params"]["entry"]["source"] != "network"]
    assert not problems, problems
