"""``facesearch serve``: the HTTP API and the analyst web page."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from facesearch.cli.common import HomeOpt


def serve(
    host: Annotated[str | None, typer.Option(help="Address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Inference worker threads.")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the HTTP API and the web app.

    The web app is at http://HOST:PORT/ui/ (by default http://127.0.0.1:8000/ui/; / leads
    there too): sign in with an access key (facesearch keys create). The native REST API is
    under /v1 and the Rekognition-compatible endpoint is POST /. The app's address is logged
    at start."""
    from facesearch.api.app import serve as run_server
    from facesearch.config import Settings

    given: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port),
                                               ("workers", workers)) if v is not None}
    where: dict[str, Any] = {"home": home} if home else {}
    run_server(Settings(**where, api=given))  # the options over FACESEARCH_API_*
