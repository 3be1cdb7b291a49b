"""Headless Chromium driven over the DevTools protocol (``websockets``), for the web app's tests
and ``scripts/ui-screenshots``: navigate, evaluate, wait on conditions, fill, click, upload,
resize, screenshot. Debian's ``chromium``; nothing is downloaded."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

DESKTOP = (1280, 800)
PHONE = (390, 844)


class BrowserError(RuntimeError):
    """Chromium could not be started or driven."""


def chromium_path() -> str | None:
    """Debian's chromium (or another Chrome) on PATH, else None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Just enough of the Chrome DevTools protocol: evaluate, wait, upload, screenshot."""

    def __init__(self, executable: str, profile: Path) -> None:
        from websockets.sync.client import connect

        profile.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update",
             "--autoplay-policy=no-user-gesture-required", "--hide-scrollbars",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise BrowserError("chromium did not start")
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

    shutdown = close

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == mine:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
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
        """Poll ``expression`` until it is truthy (a generous deadline, never a fixed sleep)."""
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

    def check(self, selector: str, on: bool = True) -> None:
        self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.checked = {json.dumps(on)};
            e.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def text(self, selector: str) -> str:
        return str(self.eval(f"document.querySelector({json.dumps(selector)}).innerText"))

    def visible(self, selector: str) -> bool:
        return bool(self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                              " return !!e && !e.closest('[hidden]'); })()"))

    def upload(self, selector: str, *paths: Path) -> None:
        """Choose files in an <input type=file> (and let the page hear 'change')."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def go(self, page: str) -> None:
        """Show one page of the app (its #fragment) and wait until it is shown."""
        self.eval(f"window.location.hash = {json.dumps(page)}")
        self.wait(f"!document.getElementById({json.dumps('page-' + page)}).hidden")

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)

    def screenshot(self, path: Path, *, max_height: int | None = None) -> None:
        """The whole page (up to ``max_height`` CSS pixels) as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        height = size["height"] if max_height is None else min(size["height"], max_height)
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": height,
                               "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self, origin: str) -> list[str]:
        """What went wrong so far: requests to anywhere but ``origin`` (and blob:/data:),
        script errors, and console errors other than failed requests."""
        out = []
        for e in self.events:
            if e["method"] == "Network.requestWillBeSent":
                url = e["params"]["request"]["url"]
                if not url.startswith((origin + "/", "blob:", "data:")):
                    out.append(f"request to {url}")
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(f"script error: {e['params']['exceptionDetails']}")
            elif e["method"] == "Log.entryAdded":
                entry = e["params"]["entry"]
                if entry["level"] == "error" and entry["source"] != "network":
                    out.append(f"console: {entry.get('text')}")
        return out


def in_ci() -> bool:
    return bool(os.environ.get("CI"))
