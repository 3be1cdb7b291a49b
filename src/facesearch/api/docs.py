"""``/docs``: the native API's reference as one static, script-free HTML page.

FastAPI's own ``/docs`` loads swagger-ui from a CDN, without an integrity check, on the API's
origin (where the analyst page holds its access key), and does not work
offline. No installed package ships swagger-ui's files, so this page is rendered on the server
from the OpenAPI schema (``/openapi.json``, which any OpenAPI tool can load) and served with a
Content-Security-Policy that allows nothing to load or run: it works offline and cannot read
the analyst's key.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

CSP = ("default-src 'none'; script-src 'none'; style-src 'none'; img-src 'none'; "
       "connect-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def render(schema: dict[str, Any]) -> str:
    """The reference page of ``schema`` (an OpenAPI document); every text is escaped."""
    e = html.escape
    info = schema.get("info", {})
    out = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{e(str(info.get('title', 'API')))} API reference</title></head><body>",
           f"<h1>{e(str(info.get('title', 'API')))} {e(str(info.get('version', '')))}</h1>",
           f"<pre>{e(str(info.get('description', '')))}</pre>",
           "<p>Machine-readable schema: <a href=\"/openapi.json\">/openapi.json</a></p>"]
    for path, ops in sorted(schema.get("paths", {}).items()):
        for method, op in ops.items():
            out.append(f"<h2><code>{e(method.upper())} {e(path)}</code></h2>")
            out.append(f"<p><b>{e(str(op.get('operationId', '')))}</b> "
                       f"{e(str(op.get('summary', '')))}</p>")
            if op.get("description"):
                out.append(f"<pre>{e(str(op['description']))}</pre>")
            params = op.get("parameters", [])
            if params:
                out.append("<ul>" + "".join(
                    f"<li><code>{e(str(p.get('name')))}</code> ({e(str(p.get('in')))}"
                    f"{', required' if p.get('required') else ''})</li>" for p in params)
                    + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """The API reference (no key needed, nothing loaded from elsewhere)."""
    return HTMLResponse(render(request.app.openapi()), headers=HEADERS)
