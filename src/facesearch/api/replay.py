"""Repeated requests: what a request sent twice with the same SigV4 signature, or the same
``ClientRequestToken``, gets (the threat model is in docs/security.md).

The AWS SDKs sign identical calls made in the same second identically (``X-Amz-Date`` has
one-second resolution and the per-invocation id is not signed), and botocore signs a retry
afresh, so an identical signature is either a client's identical call or a captured request
sent again (a replay) inside the 5-minute clock-skew window. Each operation has one
:class:`Repeat` rule per endpoint (:func:`repeat_rule`):

- :attr:`Repeat.RUN`: run again and answer as the first time would have been answered now
  (reads that neither return faces nor write an audit event; and on the Rekognition endpoint
  the creates and starts whose repeat answers as on AWS: a second CreateCollection gets
  ResourceAlreadyExistsException, a second StartStreamProcessor ResourceInUseException);
- :attr:`Repeat.FIRST_ANSWER` (Rekognition endpoint): run once; a repeat gets the first
  answer from :class:`Answers` without running again (no second copy of an IndexFaces image,
  no second job, no second search or audit event under the key, no deletion of a resource
  re-created since);
- :attr:`Repeat.ONCE` (native API): the signature is accepted once
  (:class:`SharedReplays`), a repeat is refused as ``replayed_request``
  (key and policy changes, erasure, feeds, face crops...).

A ``ClientRequestToken`` (Rekognition: Start* jobs, CreateUser, DeleteUser, AssociateFaces,
DisassociateFaces; botocore fills one in for the last four) makes a request run once per
key, operation and token for :data:`TOKEN_TTL_S`: the same token with the same parameters
gets the first successful answer, with other parameters IdempotentParameterMismatchException.

Both are kept in the metadata database (``request_answers``), so they hold across restarts
and across the API nodes of a shared database.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import heapq
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Response

from facesearch.api.auth import Operation
from facesearch.api.errors import AMZ_JSON, ReplayedRequestError
from facesearch.errors import IdempotencyMismatchError, ThrottledError
from facesearch.storage.store import Store

TOKEN_TTL_S = 24 * 3600.0
"""How long a ``ClientRequestToken``'s answer is kept (s)."""

PENDING_S = 900.0
"""How long a claim is held while its request runs (s): a request cut off by a crash frees its
signature or token after this long."""

WAIT_S = 60.0
"""How long a repeat waits for the first request's answer while it runs (s); then it is
answered ThrottlingException (retry later)."""

POLL_S = 0.05

Io = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a blocking call off the event loop (:meth:`facesearch.api.context.ApiContext.io`)."""


class Repeat(str, enum.Enum):
    RUN = "run"
    FIRST_ANSWER = "first_answer"
    ONCE = "once"


_O = Operation

UNAUDITED_READS: frozenset[Operation] = frozenset({
    _O.LIST_COLLECTIONS, _O.DESCRIBE_COLLECTION, _O.LIST_USERS, _O.LIST_KEYS, _O.WHO_AM_I,
    _O.GET_POLICY, _O.THRESHOLD_RISK, _O.THRESHOLD_FOR_FPIR, _O.VERIFY_AUDIT,
    _O.LIST_VIDEO_JOBS, _O.DESCRIBE_VIDEO_JOB, _O.LIST_STREAM_PROCESSORS,
    _O.DESCRIBE_STREAM_PROCESSOR, _O.GET_STREAM_PROCESSOR_METRICS, _O.LIST_TAGS_FOR_RESOURCE,
    _O.GET_TRANSPARENCY_REPORT,
})
"""Operations that change nothing, write no audit event and return no face, crop or match:
a repeat runs again (a polling loop sees the current state) on both endpoints."""

REKOGNITION_RERUN: frozenset[Operation] = frozenset({
    _O.CREATE_COLLECTION, _O.CREATE_USER, _O.CREATE_STREAM_PROCESSOR,
    _O.START_STREAM_PROCESSOR, _O.STOP_STREAM_PROCESSOR, _O.UPDATE_STREAM_PROCESSOR,
})
"""Rekognition changes whose repeat cannot do more than the first did and is answered as AWS
answers it (already exists, in use, already stopped)."""


def repeat_rule(operation: Operation, *, rekognition: bool) -> Repeat:
    """What a request repeated with the same signature gets (see the module)."""
    if operation in UNAUDITED_READS:
        return Repeat.RUN
    if not rekognition:
        return Repeat.ONCE
    return Repeat.RUN if operation in REKOGNITION_RERUN else Repeat.FIRST_ANSWER


def fingerprint(params: dict[str, object]) -> str:
    """The hash of a request's parameters, its ``ClientRequestToken`` left out."""
    rest = {k: v for k, v in params.items() if k != "ClientRequestToken"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """What a request holds in :class:`Answers` while it runs."""

    key: str
    fingerprint: str
    ttl_s: float
    keep_errors: bool
    """Whether an error answer is kept (a repeated signature) or released so that a retry
    runs again (a token: the same response is promised for a successful request)."""


def signature_claim(signature: str, clock_skew_s: float) -> Claim:
    """A request's SigV4 signature: kept while its date is inside the window (at most twice
    the skew from now)."""
    return Claim(f"sig:{signature}", "", 2 * clock_skew_s, keep_errors=True)


def token_claim(key_id: str, operation: Operation, token: str,
                params: dict[str, object]) -> Claim:
    """A ``ClientRequestToken``: per key and operation (another key's token is another)."""
    return Claim(f"tok:{key_id}:{operation.value}:{token}", fingerprint(params), TOKEN_TTL_S,
                 keep_errors=False)


class Answers:
    """The answers of requests that run once, in the metadata database. Expired rows are
    deleted at most once every :attr:`PURGE_EVERY_S` per process."""

    PURGE_EVERY_S = 60.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._next_purge = 0.0

    async def once(self, claim: Claim, io: Io, run: Callable[[], Awaitable[Response]]) -> Response:
        """``run()``'s answer, run only if ``claim`` is free; otherwise the answer of the
        request that holds it (waited for while it runs). ``run`` answers errors as responses
        (kept like answers); what it raises (throttled: refused before anything was done)
        releases the claim. ``io`` runs blocking calls off the event loop."""
        now = time.time()
        if now >= self._next_purge:
            self._next_purge = now + self.PURGE_EVERY_S
            await io(lambda: self.store.requests.purge_answers(now))
        claimed = await io(lambda: self.store.requests.claim_answer(claim.key, claim.fingerprint,
                                                           now + PENDING_S, now))
        if not claimed:
            return await self._first_answer(claim, io)
        try:
            response = await run()
        except BaseException:  # refused before doing anything (throttled), or a bug: a retry
            await io(lambda: self.store.requests.drop_answer(claim.key))  # may run it again
            raise
        status = response.status_code
        if status < 300 or claim.keep_errors:
            body = bytes(response.body)
            until = time.time() + claim.ttl_s
            await io(lambda: self.store.requests.record_answer(claim.key, status, body, until))
        else:
            await io(lambda: self.store.requests.drop_answer(claim.key))
        return response

    async def _first_answer(self, claim: Claim, io: Io) -> Response:
        deadline = time.monotonic() + WAIT_S
        while True:
            found = await io(lambda: self.store.requests.answer_of(claim.key))
            if found is None:  # released meanwhile (the first request was refused)
                raise ThrottledError("an identical request was refused just now; retry",
                                     retry_after=1)
            fp, status, body = found
            if fp != claim.fingerprint:
                raise IdempotencyMismatchError(
                    "this ClientRequestToken was used for a request with other parameters")
            if status is not None and body is not None:
                return replayed_response(int(status), bytes(body))
            if time.monotonic() > deadline:
                raise ThrottledError("an identical request is still running; retry later",
                                     retry_after=5)
            await asyncio.sleep(POLL_S)


def replayed_response(status: int, body: bytes) -> Response:
    """A kept answer, as the Rekognition endpoint answers (AWS JSON 1.1)."""
    headers = {}
    if status >= 300:
        try:
            headers["x-amzn-ErrorType"] = str(json.loads(body).get("__type", ""))
        except ValueError:
            pass
    return Response(body, status_code=status, media_type=AMZ_JSON, headers=headers)


# -- signatures seen ----------------------------------------------------------------------

class ReplayCache:
    """The SigV4 signatures accepted in the last clock-skew window, to refuse a replay, in
    this process's memory (library use; the server keeps them in its database with
    :class:`SharedReplays`, which a restart does not forget).

    Thread-safe, per process (a replay sent to another process would get through). Each
    signature is kept until its request's date + the skew window (after that the date is
    refused anyway). Identical requests signed in the same second have the same signature
    (the AWS SDKs add ``amz-sdk-invocation-id`` after signing): a client tells them apart
    with a signed unique header (``X-Facesearch-Nonce``). At most
    ``max_entries`` (default 200,000, about 50 MB) live at once; when that many unexpired
    signatures are held, new ones are refused as throttled rather than an old one forgotten
    (forgetting would re-open a replay).
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}  # signature -> expiry
        self._expiries: list[tuple[float, str]] = []  # a heap of (expiry, signature)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, signature: str, expires_at: float, now: float) -> None:
        """Remember ``signature`` until ``expires_at`` (s since the epoch), or raise
        :class:`ReplayedRequestError` if it was admitted before and has not expired."""
        with self._lock:
            while self._expiries and self._expiries[0][0] <= now:
                _, old = heapq.heappop(self._expiries)
                self._seen.pop(old, None)
            if signature in self._seen:
                raise ReplayedRequestError(
                    "this request signature was already used: sign every request afresh "
                    "(replays within the clock-skew window are refused)")
            if len(self._seen) >= self.max_entries:
                raise ThrottledError("too many signed requests in the clock-skew window; "
                                     "retry later", retry_after=60)
            self._seen[signature] = expires_at
            heapq.heappush(self._expiries, (expires_at, signature))

    def forget(self, signature: str) -> None:
        """Accept ``signature`` once more: its request was refused before it did anything
        (throttled, overloaded), so that a client may retry it as sent."""
        with self._lock:
            self._seen.pop(signature, None)


class SharedReplays:
    """The signatures accepted in the clock-skew window kept in the metadata database (SQLite
    or PostgreSQL), so that a replay is refused after a restart and by every API node of a
    shared database.
    Same contract as :class:`ReplayCache`; one row a signature. Expired rows are deleted by
    each node at most once every :attr:`PURGE_EVERY_S`, off the signature's own statement."""

    PURGE_EVERY_S = 60.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._next_purge = 0.0

    def admit(self, signature: str, expires_at: float, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + self.PURGE_EVERY_S
            self.store.requests.purge_signatures(now)
        if not self.store.requests.admit_signature(signature, expires_at, now):
            raise ReplayedRequestError(
                "this request signature was already used: sign every request afresh "
                "(replays within the clock-skew window are refused)")

    def forget(self, signature: str) -> None:
        self.store.requests.forget_signature(signature)


Replays = ReplayCache | SharedReplays
"""Where accepted signatures are remembered: this process, or the database (the server)."""
