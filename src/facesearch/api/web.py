"""The web app: a static page (HTML, CSS, plain JavaScript modules; no build step) served at
``/ui/``: search and review, collections, video, live cameras, audit, transparency report
(docs/web.md). What it offers follows the signed-in key's role (``/v1/whoami``).

The page and its assets need no key; every API call the page makes carries the analyst's
access key (``Authorization: Bearer``), kept in the page's memory only (never stored). Only the
files named in :data:`ASSETS` are served, from the package (``facesearch/web/``), with a
Content-Security-Policy that lets the page load and call nothing but this server.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from facesearch.errors import NotFoundError

_JS = "text/javascript; charset=utf-8"

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": _JS,
    "core.js": _JS,
    "search.js": _JS,
    "collections.js": _JS,
    "persons.js": _JS,
    "video.js": _JS,
    "live.js": _JS,
    "audit.js": _JS,
    "report.js": _JS,
}
"""The files of the page and their content types; nothing else is served."""

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
       "base-uri 'none'")
"""``media-src blob:`` lets the video page play the file the user uploads from their own
disk (an object URL), to jump to a frame; nothing else is loaded from anywhere but here."""

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def asset(name: str) -> Response:
    """One file of the page, with its content type and the page's security headers."""
    if name not in ASSETS:
        raise NotFoundError(f"no such file of the web page: {name!r}")
    body = resources.files("facesearch").joinpath("web").joinpath(name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=HEADERS)


@router.get("/")
async def root_redirect() -> RedirectResponse:
    """``GET /`` leads to the web app (``POST /`` is the Rekognition endpoint)."""
    return RedirectResponse("/ui/", status_code=302)


@router.get("/ui")
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=308)


@router.get("/ui/")
async def ui_index() -> Response:
    """The web app."""
    return asset("index.html")


@router.get("/ui/{name}")
async def ui_asset(name: str) -> Response:
    """The page's scripts and style sheet."""
    return asset(name)
