"""What the routes of one app share: the service, the work pool, metrics, the S3 store, and
how a request becomes an authenticated, authorised :class:`~facesearch.types.Caller`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from facesearch.api.auth import (
    FailedAuthThrottle,
    Operation,
    SignedRequest,
    authenticate,
    authorize,
    sigv4_signature,
)
from facesearch.api.errors import AuthenticationError, QueueFullError
from facesearch.api.metrics import Metrics
from facesearch.api.replay import Answers, Repeat, ReplayCache, Replays, repeat_rule
from facesearch.api.s3 import S3Images
from facesearch.api.work import WorkPool
from facesearch.config import ApiSettings
from facesearch.errors import AccessDeniedError
from facesearch.governance.keys import KeyInfo
from facesearch.service import FaceSearch
from facesearch.types import Caller

T = TypeVar("T")

PURPOSE_HEADER = "x-facesearch-purpose"
CASE_HEADER = "x-facesearch-case"


@dataclass
class ApiContext:
    fs: FaceSearch
    settings: ApiSettings
    pool: WorkPool
    metrics: Metrics
    s3: S3Images
    body_limit: int
    replays: Replays = field(default_factory=ReplayCache)
    """SigV4 signatures seen in the clock-skew window: this process's, or with a PostgreSQL
    database every node's (:class:`facesearch.api.replay.SharedReplays`)."""
    answers: Answers | None = None
    """The answers of Rekognition requests that run once (:mod:`facesearch.api.replay`)."""
    auth_failures: FailedAuthThrottle = field(default_factory=FailedAuthThrottle)
    """Failed authentications per source address (this process's)."""

    async def infer(self, fn: Callable[[], T]) -> T:
        """Run inference or search work on the bounded pool."""
        try:
            return await self.pool.run(fn)
        except QueueFullError:
            self.metrics.rejected.labels("queue_full").inc()
            raise

    async def io(self, fn: Callable[[], T]) -> T:
        """Run a short blocking call (database, S3) off the event loop."""
        return await run_in_threadpool(fn)

    async def caller(self, request: Request, operation: Operation, *, service: str,
                     allow_bearer: bool) -> Caller:
        """Authenticate the request, authorise ``operation`` for its key, and name the caller
        (with the purpose and case reference headers, if sent)."""
        state = request.scope.setdefault("state", {})
        state["operation"] = operation.value
        signed = SignedRequest(
            method=request.method,
            path=request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1"))
                     for k, v in request.scope["headers"]],
            body=await request.body())
        # Which repeats of a signature are refused here (the rest are answered, by running
        # again or with the first answer): facesearch.api.replay.
        once = repeat_rule(operation, rekognition=service == "rekognition") is Repeat.ONCE
        source = request.client.host if request.client else None
        self.auth_failures.check(source)
        try:
            key: KeyInfo = await self.io(lambda: authenticate(
                signed, self.fs.keys, service=service, max_skew_s=self.settings.clock_skew_s,
                allow_bearer=allow_bearer, now=time.time(),
                replays=self.replays if once else None))
        except AuthenticationError:
            self.auth_failures.failed(source)
            raise
        state["key_id"] = key.key_id
        state["key"] = key
        state["signature"] = sigv4_signature(request.headers.get("authorization"))
        authorize(key, operation)
        purpose = request.headers.get(PURPOSE_HEADER) or None
        case_ref = request.headers.get(CASE_HEADER) or None
        if key.case_ref is not None:
            # A key issued for a case always acts for that case; headers cannot move it.
            if (case_ref and case_ref != key.case_ref) or (purpose and purpose != key.purpose):
                raise AccessDeniedError(
                    f"access key {key.key_id} is issued for case {key.case_ref!r}; it cannot "
                    "act for another case or purpose")
            purpose, case_ref = key.purpose, key.case_ref
        return Caller(actor=key.key_id, role=key.role, purpose=purpose,
                      case_ref=case_ref,
                      client=request.client.host if request.client else None)

    def shutdown(self) -> None:
        """Stop the workers (after the queued jobs) and the S3 client."""
        self.pool.shutdown()
        self.s3.shutdown()


def context(request: Request) -> ApiContext:
    """The app's context (set by :func:`facesearch.api.app.create_app`)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx
