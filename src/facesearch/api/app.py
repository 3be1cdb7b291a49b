"""The app factory, its lifespan, and the server (``facesearch serve``).

:func:`create_app` builds a FastAPI app over a :class:`~facesearch.service.FaceSearch`:
the native API under ``/v1`` (OpenAPI at ``/openapi.json``, a reference page at ``/docs``),
the Rekognition endpoint at ``POST /``, ``/healthz``, ``/readyz`` and ``/metrics`` (these
need no key). A pure ASGI middleware gives every request an id, checks the authentication
headers and the declared length before any of the body is read, enforces the body size limit
(413, chunked bodies too), and records metrics and one structured (JSON) log line per request.
:func:`serve` runs it with uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facesearch import __version__
from facesearch.api import (
    accountability,
    collections,
    crops,
    docs,
    keys,
    rekognition,
    search,
    streams,
    users,
    web,
)
from facesearch.api import video as video_api
from facesearch.api.auth import (
    FailedAuthThrottle,
    SignedRequest,
    preauthenticate,
)
from facesearch.api.context import ApiContext, context
from facesearch.api.errors import (
    AuthenticationError,
    RequestTooLargeError,
    error_response,
    on_facesearch_error,
    on_http_error,
    on_unexpected_error,
    on_validation_error,
)
from facesearch.api.metrics import Metrics
from facesearch.api.outages import DATABASE_ERRORS, classify, on_unavailable
from facesearch.api.replay import Answers, SharedReplays
from facesearch.api.work import WorkPool
from facesearch.config import Settings
from facesearch.errors import FaceSearchError, ThrottledError, UnavailableError
from facesearch.governance.retention import RetentionWorker
from facesearch.governance.trail import OutboxSweeper
from facesearch.media.inputs import redact_credentials
from facesearch.service import FaceSearch
from facesearch.shapes.base import hide_paths
from facesearch.vision.pipeline import ThreadLocalPipeline, pipeline_from

log = logging.getLogger("facesearch.api")

SHUTDOWN_GRACE_S = 15
"""At shutdown, requests still open after this long are cancelled."""

RETRYABLE = frozenset({429, 503})
"""Statuses of requests refused before any work (throttled, queue full): their SigV4
signature may be sent again (a retry)."""

DESCRIPTION = """\
Self-hosted, accountable face search. Every search returns **candidates for human review,
never identifications**.

Authenticate every `/v1` call with an access key (`facesearch keys create --role ROLE`):
`Authorization: Bearer <key id>:<secret>` (over TLS), or AWS Signature Version 4 with the
service name `facesearch` (sign `X-Facesearch-*` headers too; the signature of a change,
search or feed is accepted once: send a signed `X-Facesearch-Nonce` to make two identical
ones in one second).
State why you search with the `X-Facesearch-Purpose` and `X-Facesearch-Case` headers. The
Amazon Rekognition-compatible endpoint is `POST /` (AWS JSON 1.1, SigV4 with the service name
`rekognition`).
"""


def open_service(settings: Settings) -> FaceSearch:
    """The service for a server (``serving``: the API's settings apply to its services):
    one face pipeline per inference worker thread."""
    # Each worker's models get an equal share of the cores (unless threads are configured).
    share = max(1, len(os.sched_getaffinity(0)) // settings.api.workers)
    pipeline = ThreadLocalPipeline(lambda: pipeline_from(settings, threads=settings.threads
                                                                or share))
    return FaceSearch(settings, pipeline=pipeline, serving=True)


def create_app(fs: FaceSearch) -> FastAPI:
    """The HTTP app over ``fs``, with its settings' ``api`` group. Its pipeline must be safe
    to call from ``api.workers`` threads (:func:`open_service` makes one that is). The app
    starts its workers when it starts and stops them (and its S3 client) when it stops;
    ``fs`` stays the caller's. It also starts ``fs``'s video jobs and resumes its stream
    processors, and stops both when it stops; ``api.video`` bounds uploads (and, with
    ``fs`` opened for serving, server paths). With an SNS endpoint
    (``api.sns.endpoint_url``), video jobs publish Rekognition's completion message to the
    topic a client names; with a Kinesis endpoint, stream processors write Rekognition
    Video's records to the data stream a client names (``fs`` owns both outputs)."""
    settings = fs.settings.api
    home = fs.settings.home
    hide_paths(str(home), str(home.resolve()))  # no error message names the data directory

    def warm() -> None:
        fs.pipeline.for_thread()

    pool = WorkPool(settings.workers, settings.queue, retry_after_s=settings.retry_after_s,
                    init=warm)
    ctx = ApiContext(fs=fs, settings=settings, pool=pool,
                     metrics=Metrics(lambda: pool.depth, lambda: pool.busy),
                     s3=video_api.S3Videos(settings.s3, fs.settings.max_image_bytes,
                                           fs.settings.max_video_bytes),
                     body_limit=settings.body_limit(fs.settings.max_image_bytes),
                     # The signatures seen and the answers kept are in the database (SQLite
                     # too): they hold across restarts and every node of a shared database.
                     replays=SharedReplays(fs.store), answers=Answers(fs.store),
                     auth_failures=FailedAuthThrottle(settings.auth_failures_per_minute))

    retention = RetentionWorker(fs.erasure, settings.retention_interval_s)
    sweeper = OutboxSweeper(fs.trail)  # audit events a crashed node staged

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        retention.start()
        sweeper.start()
        await ctx.io(fs.video.start)
        await ctx.io(fs.streams.resume)
        try:
            yield
        finally:
            await ctx.io(fs.streams.shutdown)
            await ctx.io(fs.video.shutdown)
            await ctx.io(retention.shutdown)
            await ctx.io(sweeper.shutdown)
            await ctx.io(ctx.shutdown)

    # FastAPI's /docs loads swagger-ui from a CDN (no integrity check, on the API's origin,
    # where the web page keeps the analyst's key): replaced by a script-free page (docs.py).
    app = FastAPI(title="facesearch", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    app.add_exception_handler(FaceSearchError, on_facesearch_error)
    app.add_exception_handler(UnavailableError, on_unavailable)
    for db_error in DATABASE_ERRORS:
        app.add_exception_handler(db_error, on_unavailable)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.include_router(collections.router)
    app.include_router(search.router)
    app.include_router(users.router)
    app.include_router(keys.router)
    app.include_router(accountability.router)
    app.include_router(crops.router)
    app.include_router(rekognition.router)
    app.include_router(video_api.router)
    app.include_router(streams.router)
    app.include_router(streams.ws_router)
    app.include_router(web.router)
    app.include_router(docs.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestMiddleware, ctx=ctx, upload_limit=settings.video.max_upload_bytes)
    return app


async def healthz() -> JSONResponse:
    """The process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when every worker has loaded its pipeline and the database and the vector
    backend answer; 503 otherwise (at once: a backend down is not waited for)."""
    ctx = context(request)
    if ctx.pool.init_error is not None:
        return JSONResponse({"status": "failed", "reason": str(ctx.pool.init_error)}, 503)
    if not ctx.pool.ready.is_set():
        return JSONResponse({"status": "starting"}, 503)
    try:  # the database, and the vector backend
        await ctx.io(ctx.fs.collections.list_collections)
        await ctx.io(ctx.fs.indexes.check)
    except (UnavailableError, *DATABASE_ERRORS) as exc:
        err = classify(exc)
        if err is None:
            raise
        return JSONResponse({"status": "unavailable", "reason": err.message}, 503)
    return JSONResponse({"status": "ready", "model_version": ctx.fs.collections.model_version})


async def metrics(request: Request) -> Response:
    return Response(context(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _auth_service(scope: Scope) -> tuple[str, bool] | None:
    """The SigV4 service (and whether Bearer is accepted) of a route that needs a key."""
    path = scope["path"]
    if path == "/" and scope["method"] == "POST":
        return "rekognition", False
    if path.startswith("/v1/") or path == "/v1":
        return "facesearch", True
    return None


class RequestMiddleware:
    """Request id, authentication headers before the body, body size limit, metrics and one
    JSON log line per request."""

    def __init__(self, app: ASGIApp, ctx: ApiContext, upload_limit: int | None = None) -> None:
        self.app = app
        self.ctx = ctx
        self.upload_limit = upload_limit  # video uploads (UPLOAD_PATHS)

    async def _refuse_headers(self, scope: Scope) -> AuthenticationError | None:
        """Why the request's authentication headers are refused (None: they may be right).
        Only the body-free checks: the signature itself is checked once the body is read."""
        found = _auth_service(scope)
        if found is None:
            return None
        service, bearer = found
        scope.setdefault("state", {})["api"] = "rekognition" if service == "rekognition" \
            else "native"
        req = SignedRequest(
            method=scope["method"], path=scope.get("raw_path", b"").decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1"))
                     for k, v in scope["headers"]], body=b"")
        client = scope.get("client")
        source = client[0] if client else None
        self.ctx.auth_failures.check(source)  # ThrottledError: answered by the caller
        try:
            await run_in_threadpool(lambda: preauthenticate(
                req, self.ctx.fs.keys, service=service, max_skew_s=self.ctx.settings.clock_skew_s,
                allow_bearer=bearer, now=time.time()))
        except AuthenticationError as exc:
            self.ctx.auth_failures.failed(source)
            return exc
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = str(uuid.uuid4())
        state["request_id"] = request_id
        limit = self.ctx.body_limit
        if self.upload_limit is not None and scope["path"] in video_api.UPLOAD_PATHS:
            limit = max(limit, self.upload_limit)
        status = 500
        received = 0
        overflow: RequestTooLargeError | None = None

        async def limited_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = RequestTooLargeError(f"the request body is over the server's "
                                                    f"limit of {limit} bytes")
                    raise overflow
            return message

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        answered = False

        async def send_or_413(message: MutableMapping[str, Any]) -> None:
            # A body over the limit without a Content-Length (chunked) is noticed while it is
            # read, where the framework may answer 400 ("error parsing the body"): answer 413.
            nonlocal answered
            if overflow is None:
                await send_with_id(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                self.ctx.metrics.rejected.labels("too_large").inc()
                await error_response(Request(scope), overflow)(scope, receive, send_with_id)

        try:
            try:
                refused: FaceSearchError | None = await self._refuse_headers(scope)
            except (UnavailableError, *DATABASE_ERRORS) as exc:  # key lookup, replay check
                refused = classify(exc)
                if refused is None:
                    raise
            except ThrottledError as exc:  # failed authentications from this source
                self.ctx.metrics.rejected.labels("auth_throttled").inc()
                refused = exc
            if refused is not None:
                if isinstance(refused, UnavailableError):
                    self.ctx.metrics.rejected.labels("unavailable").inc()
                elif not isinstance(refused, ThrottledError):
                    self.ctx.metrics.rejected.labels("unauthenticated").inc()
                await error_response(Request(scope), refused)(scope, receive, send_with_id)
                return
            length = _content_length(scope)
            if length is not None and length > limit:
                exc = RequestTooLargeError(f"the request body ({length} bytes) is over the "
                                           f"server's limit of {limit} bytes")
                self.ctx.metrics.rejected.labels("too_large").inc()
                await error_response(Request(scope), exc)(scope, receive, send_with_id)
                return
            await self.app(scope, limited_receive, send_or_413)
        finally:
            if status in RETRYABLE and state.get("signature"):
                # Refused before doing anything: let the client retry it as signed.
                try:
                    self.ctx.replays.forget(state["signature"])
                except DATABASE_ERRORS as exc:  # the database is down: nothing to forget
                    if classify(exc) is None:
                        raise
            self._record(scope, state, status, time.perf_counter() - start)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        api = state.get("api")
        if api is None:
            return  # health, readiness, metrics, docs
        operation = state.get("operation", "unknown")
        self.ctx.metrics.observe(api, operation, status, seconds)
        client = scope.get("client")
        log.info("request", extra={"fields": {
            "request_id": state.get("request_id"), "api": api, "operation": operation,
            "status": status, "key_id": state.get("key_id"),
            "client": client[0] if client else None, "ms": round(seconds * 1000, 1)}})


def _content_length(scope: Scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the record's ``fields``; the
    password of any URL in it masked (:func:`~facesearch.media.inputs.redact_credentials`)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact_credentials(json.dumps(out, default=str))


def configure_logging(level: str) -> None:
    """Structured logs on stderr for the server process (called by :func:`serve` only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def app_url(host: str, port: int) -> str:
    """The web app's address for a server bound to ``host``:``port`` (a wildcard address is
    shown as 127.0.0.1, which reaches it from the same machine)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/ui/"


def serve(settings: Settings) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM), then shut everything down."""
    import uvicorn

    api = settings.api
    configure_logging(api.log_level)
    fs = open_service(settings)
    try:
        app = create_app(fs)
        config = uvicorn.Config(app, host=api.host, port=api.port, log_config=None,
                                access_log=False, limit_concurrency=api.max_connections,
                                lifespan="on", server_header=False,
                                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                for server in self.servers:
                    for sock in server.sockets:
                        url = app_url(api.host, sock.getsockname()[1])
                        log.info("the web app is at %s (the native API under /v1/)", url,
                                 extra={"fields": {"web_app": url}})
                        return

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                # Live event feeds (SSE, WebSocket) never end by themselves, and uvicorn waits
                # for open responses before the app's own shutdown: end them (and the stream
                # processors) first.
                await asyncio.to_thread(fs.streams.shutdown)
                await super().shutdown(sockets)

        Server(config).run()
    finally:
        fs.shutdown()
