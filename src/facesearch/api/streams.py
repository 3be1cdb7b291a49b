"""Live stream processors over HTTP (native API, ``/v1/streams``): create, list, describe,
start, stop, delete, metrics, and their event feeds.

Routes call :attr:`FaceSearch.streams <facesearch.service.FaceSearch.streams>`. Feeds of a
processor's events: Server-Sent Events at ``GET /v1/streams/{name}/events`` (authenticated like
every ``/v1`` route), and a WebSocket at ``/v1/streams/{name}/ws`` that takes the same keys
either in the handshake's ``Authorization`` header (bearer or SigV4) or, for clients that
cannot set headers (browsers), as a first message ``{"authorization": "Bearer <key
id>:<secret>"}`` within 10 s. Every event is a candidate for human review. A feed ends (``end``
with a reason) as soon as the key that opened it is revoked or expires; a key issued for a
case sees only the processors of its case (others are "not found"). A processor may play a
video file as a camera only under the video roots (:class:`~facesearch.config.VideoApiSettings`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from facesearch.api.auth import Operation, SignedRequest, authenticate, authorize
from facesearch.api.context import ApiContext, context
from facesearch.api.errors import AuthenticationError, SerializationError, mapping
from facesearch.api.native import CallerDep, native_router
from facesearch.api.paging import page_by_name
from facesearch.api.video import allowed_path
from facesearch.errors import FaceSearchError, InvalidParameterError
from facesearch.media.events import StreamEvent, Subscription
from facesearch.media.inputs import classify_input
from facesearch.media.stream.model import LiveView, StreamSettings
from facesearch.shapes.base import public_message
from facesearch.shapes.streams import StreamMetricsOut, StreamProcessorOut, StreamProcessorsPage
from facesearch.types import Caller

router = native_router((400, 401, 403, 404, 409, 413, 429, 503))
ws_router = APIRouter(prefix="/v1")
"""The WebSocket route, which authenticates itself (see the module docstring)."""

KEEPALIVE_S = 15.0


WS_AUTH_TIMEOUT_S = 10.0



class StreamProcessorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.\-]+$")
    settings: StreamSettings


def jsonl_root(ctx: ApiContext) -> Path:
    """Where the JSONL files of processors created over HTTP go."""
    return (ctx.fs.home / "streams").resolve()


def checked_stream_settings(ctx: ApiContext, s: StreamSettings) -> StreamSettings:
    """The API's limits on a processor's server-side resources: a file input must lie under
    the video roots (a camera is the operator's: not held to them); a JSONL file is a relative
    path under ``<home>/streams``."""
    if s.input_url is not None:
        target, _, is_file = classify_input(s.input_url, s.input_format,
                                            allow_devices=ctx.fs.streams.allow_devices)
        if is_file:
            allowed_path(ctx, target, "input_url")
    if s.jsonl_path is None:
        return s
    root = jsonl_root(ctx)
    dest = (root / s.jsonl_path).resolve()
    if s.jsonl_path.is_absolute() or ".." in s.jsonl_path.parts or not dest.is_relative_to(root):
        raise InvalidParameterError("jsonl_path must be a relative path (the file is written "
                                    "under the server's <home>/streams)")
    return s.model_copy(update={"jsonl_path": dest})


@router.post("/streams", name=Operation.CREATE_STREAM_PROCESSOR.value, status_code=201)
async def create_stream_processor(request: Request, body: StreamProcessorIn,
                                  caller: CallerDep) -> StreamProcessorOut:
    """Define a processor (STOPPED until started). Its searches run, and are audited, on
    behalf of the key that creates it, with this request's purpose and case."""
    ctx = context(request)
    settings = checked_stream_settings(ctx, body.settings)
    info = await ctx.io(lambda: ctx.fs.streams.create(body.name, settings, caller=caller))
    return StreamProcessorOut.of(info, jsonl_root(ctx))


@router.get("/streams", name=Operation.LIST_STREAM_PROCESSORS.value)
async def list_stream_processors(request: Request, caller: CallerDep,
                                 max_results: Annotated[int, Query(ge=1, le=1000)] = 100,
                                 next_token: str | None = None) -> StreamProcessorsPage:
    """Processors in name order, a page at a time."""
    ctx = context(request)
    infos = {p.name: p for p in await ctx.io(lambda: ctx.fs.streams.list_processors(caller=caller))}
    names, nxt = page_by_name(list(infos), next_token, max_results, "streams")
    root = jsonl_root(ctx)
    return StreamProcessorsPage(processors=[StreamProcessorOut.of(infos[n], root) for n in names],
                                next_token=nxt)


@router.get("/streams/{name}", name=Operation.DESCRIBE_STREAM_PROCESSOR.value)
async def describe_stream_processor(request: Request, name: str,
                                    caller: CallerDep) -> StreamProcessorOut:
    """A processor's definition, status and (when it runs here) metrics."""
    ctx = context(request)
    return StreamProcessorOut.of(await ctx.io(lambda: ctx.fs.streams.describe(name, caller=caller)),
                         jsonl_root(ctx))


@router.post("/streams/{name}/start", name=Operation.START_STREAM_PROCESSOR.value)
async def start_stream_processor(request: Request, name: str,
                                 caller: CallerDep) -> StreamProcessorOut:
    """Start a processor in this server (409 if it already runs)."""
    ctx = context(request)
    info = await ctx.io(lambda: ctx.fs.streams.start(name, caller=caller))
    return StreamProcessorOut.of(info, jsonl_root(ctx))


@router.post("/streams/{name}/stop", name=Operation.STOP_STREAM_PROCESSOR.value)
async def stop_stream_processor(request: Request, name: str,
                                caller: CallerDep) -> StreamProcessorOut:
    """Stop a processor (a no-op when it is not running)."""
    ctx = context(request)
    return StreamProcessorOut.of(await ctx.io(lambda: ctx.fs.streams.stop(name, caller=caller)),
                         jsonl_root(ctx))


@router.delete("/streams/{name}", name=Operation.DELETE_STREAM_PROCESSOR.value, status_code=204,
               response_class=Response)
async def delete_stream_processor(request: Request, name: str, caller: CallerDep) -> Response:
    """Stop and delete a processor; its live feeds end."""
    ctx = context(request)
    await ctx.io(lambda: ctx.fs.streams.delete(name, caller=caller))
    return Response(status_code=204)


@router.get("/streams/{name}/metrics", name=Operation.GET_STREAM_PROCESSOR_METRICS.value)
async def get_stream_processor_metrics(request: Request, name: str,
                                       caller: CallerDep) -> StreamMetricsOut:
    """A processor's status and, when it runs here, its counters, rates and latencies."""
    ctx = context(request)
    info = await ctx.io(lambda: ctx.fs.streams.describe(name, caller=caller))
    return StreamMetricsOut.model_validate(info)


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _next_event(ctx: ApiContext, sub: Subscription, actor: str) -> StreamEvent | str | None:
    """The feed's next event; None on a keep-alive tick; a reason (str) when the feed must end
    (closed, or the reader's key revoked or expired: checked before every delivery, and at
    the moment the key expires)."""
    info = await ctx.io(lambda: ctx.fs.keys.describe(actor)) if actor.startswith("FSAK") \
        else None
    wait = KEEPALIVE_S
    if info is not None and info.expires_at is not None:
        wait = max(0.0, min(wait, info.expires_at - ctx.fs.keys.clock()))
    ev = await sub.aget(wait)
    if ev is None and sub.closed:
        return sub.end_reason or "the processor was deleted or the server stops"
    problem = await ctx.io(lambda: ctx.fs.keys.problem(actor))
    if problem is not None:
        sub.close(problem, discard=True)
        return problem
    return ev


@router.get("/streams/{name}/events", name=Operation.GET_STREAM_PROCESSOR_EVENTS.value,
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `subscribed`, then one "
                                            "`face_match` per event, `end` when the processor "
                                            "is deleted; `: keep-alive` comments every 15 s"}})
async def stream_events(request: Request, name: str, caller: CallerDep) -> StreamingResponse:
    """The processor's events as they happen (Server-Sent Events), across its stops and
    starts, until it is deleted, the key that opened the feed is revoked or expires, or the
    client goes away."""
    ctx = context(request)
    loop = asyncio.get_running_loop()
    sub = await ctx.io(lambda: ctx.fs.streams.subscribe(name, loop=loop, caller=caller))
    hub = ctx.fs.streams.hub(name)

    async def feed() -> AsyncIterator[bytes]:
        try:
            yield _sse("subscribed", {"processor": name})
            while True:
                ev = await _next_event(ctx, sub, caller.actor)
                if isinstance(ev, StreamEvent):
                    yield _sse("face_match", ev.to_json(), ev.event_id)
                elif isinstance(ev, str):
                    yield _sse("end", {"processor": name, "reason": ev})
                    return
                else:
                    yield b": keep-alive\n\n"
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(feed(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


LIVE_INTERVAL_S = 0.5
"""How often a live view sends the newest frame (at most 2 frames/s: fit for slow links)."""


def _live_json(name: str, v: LiveView) -> dict[str, Any]:
    return {"processor": name, "seq": v.seq, "content_type": "image/jpeg",
            "data": base64.b64encode(v.jpeg).decode("ascii"), "width": v.width,
            "height": v.height, "frame_width": v.frame_width, "frame_height": v.frame_height,
            "frame_timestamp_ms": v.frame_timestamp_ms, "captured_at": round(v.captured_at, 3),
            "tracks": [{"track_id": t.track_id, "box": [round(x, 1) for x in t.box],
                        "identity": t.identity,
                        "similarity": None if t.similarity is None else round(t.similarity, 2)}
                       for t in v.tracks],
            "label": "candidates for human review, not identifications"}


@router.get("/streams/{name}/live", name=Operation.GET_STREAM_LIVE_VIEW.value,
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `subscribed`, then `frame` "
                                            "(a JPEG, base64, with the tracked faces' boxes and "
                                            "best identities) whenever a newer frame was "
                                            "processed, at most 2 per second; `end` when the "
                                            "processor is deleted or the key revoked"}})
async def stream_live(request: Request, name: str, caller: CallerDep) -> StreamingResponse:
    """A live view of a running processor: its newest processed frame (kept in memory only)
    with a box and the best candidate's identity for each face (Server-Sent Events; one
    audit event per viewing)."""
    ctx = context(request)
    await ctx.io(lambda: ctx.fs.streams.watch(name, caller=caller))

    async def feed() -> AsyncIterator[bytes]:
        yield _sse("subscribed", {"processor": name})
        last_seq, quiet = -1, 0.0
        while True:
            if ctx.fs.streams.closed or await request.is_disconnected():
                return
            problem = await ctx.io(lambda: ctx.fs.keys.problem(caller.actor))
            if problem is not None:
                yield _sse("end", {"processor": name, "reason": problem})
                return
            try:
                view = await ctx.io(lambda: ctx.fs.streams.live_view(name))
            except FaceSearchError as exc:
                yield _sse("end", {"processor": name, "reason": exc.message})
                return
            if view is not None and view.seq != last_seq:
                last_seq, quiet = view.seq, 0.0
                yield _sse("frame", _live_json(name, view))
            else:
                quiet += LIVE_INTERVAL_S
                if quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
            await asyncio.sleep(LIVE_INTERVAL_S)

    return StreamingResponse(feed(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/streams/{name}/events/{event_id}/snapshot",
            name=Operation.GET_STREAM_PROCESSOR_EVENTS.value, response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def stream_event_snapshot(request: Request, name: str, event_id: str,
                                caller: CallerDep) -> Response:
    """The JPEG snapshot of an event's face (processors created with ``snapshots``; gone once
    the matched face is erased). Audited."""
    ctx = context(request)
    data = await ctx.io(lambda: ctx.fs.streams.snapshot(name, event_id, caller=caller))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _ws_caller(websocket: WebSocket, ctx: ApiContext) -> Caller:
    """Authenticate a WebSocket (handshake header, else a first message) and authorise
    :attr:`Operation.GET_STREAM_PROCESSOR_EVENTS` through the role table."""
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
               for k, v in websocket.scope["headers"]]
    if not any(k == "authorization" for k, _ in headers):
        try:
            msg = await asyncio.wait_for(websocket.receive(), WS_AUTH_TIMEOUT_S)
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            first = json.loads(msg.get("text") or msg.get("bytes") or b"")
        except TimeoutError:
            raise InvalidParameterError("send {\"authorization\": \"Bearer <key id>:<secret>\"} "
                                        "first (or an Authorization header)") from None
        except ValueError:
            raise SerializationError("the first message must be JSON") from None
        auth = first.get("authorization") if isinstance(first, dict) else None
        headers = [("authorization", str(auth or ""))]
    signed = SignedRequest(
        method="GET",
        path=websocket.scope.get("raw_path", websocket.url.path.encode()).decode("latin-1"),
        query=websocket.scope.get("query_string", b"").decode("latin-1"),
        headers=headers, body=b"")
    client = websocket.client
    source = client.host if client else None
    ctx.auth_failures.check(source)
    try:
        key = await ctx.io(lambda: authenticate(
            signed, ctx.fs.keys, service="facesearch", max_skew_s=ctx.settings.clock_skew_s,
            allow_bearer=True, now=time.time(), replays=ctx.replays))  # a feed's signature: once
    except AuthenticationError:
        ctx.auth_failures.failed(source)
        raise
    authorize(key, Operation.GET_STREAM_PROCESSOR_EVENTS)
    return Caller(actor=key.key_id, role=key.role, client=client.host if client else None)


@ws_router.websocket("/streams/{name}/ws", name=Operation.GET_STREAM_PROCESSOR_EVENTS.value)
async def stream_websocket(websocket: WebSocket, name: str) -> None:
    """The processor's events as JSON text messages: ``{"type": "subscribed"}``, then each
    event (``"type": "face_match"``), then ``{"type": "end"}`` when the processor is deleted.
    Errors are ``{"type": "error", "code", "message"}`` followed by a close with code 4000 +
    the native HTTP status (4401, 4403, 4404, ...)."""
    ctx: ApiContext = websocket.app.state.ctx
    await websocket.accept()
    try:
        caller = await _ws_caller(websocket, ctx)
        loop = asyncio.get_running_loop()
        sub = await ctx.io(lambda: ctx.fs.streams.subscribe(name, loop=loop, caller=caller))
    except WebSocketDisconnect:
        return
    except FaceSearchError as exc:
        await websocket.send_json({"type": "error", "code": exc.code,
                                   "message": public_message(exc.message)})
        await websocket.close(code=4000 + mapping(exc).status)
        return
    hub = ctx.fs.streams.hub(name)

    async def pump() -> None:
        await websocket.send_json({"type": "subscribed", "processor": name})
        while True:
            ev = await _next_event(ctx, sub, caller.actor)
            if isinstance(ev, StreamEvent):
                await websocket.send_json(ev.to_json())
            elif isinstance(ev, str):
                await websocket.send_json({"type": "end", "processor": name, "reason": ev})
                await websocket.close()
                return

    async def listen() -> None:
        while True:  # client messages are ignored; this notices the client going away
            if (await websocket.receive())["type"] == "websocket.disconnect":
                return

    tasks = [asyncio.create_task(pump()), asyncio.create_task(listen())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if not t.cancelled() and isinstance(t.exception(), WebSocketDisconnect):
                continue
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub.unsubscribe(sub)
        if websocket.application_state is WebSocketState.CONNECTED and \
                websocket.client_state is WebSocketState.CONNECTED:
            await websocket.close()
