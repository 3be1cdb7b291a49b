"""Authentication (AWS Signature Version 4, or a bearer key) and the one role table.

Every request names an access key (:mod:`facesearch.governance.keys`) and proves it holds the key's
secret, in one of two ways:

- **SigV4** (both endpoints; what the AWS SDKs do): ``Authorization: AWS4-HMAC-SHA256
  Credential=<key id>/<date>/<region>/<service>/aws4_request, SignedHeaders=..., Signature=...``
  with ``X-Amz-Date`` (or ``Date``). The service in the scope is ``rekognition`` on ``POST /``
  and ``facesearch`` on ``/v1``; any region is accepted. The signed headers must include
  ``host``, ``x-amz-target`` when the request has one (as AWS requires), and every
  ``X-Facesearch-*`` header sent (purpose, case: they change what the request means); the
  payload hash is always computed from the body received. Requests more than ``clock_skew_s``
  (5 minutes) away from the server's clock are refused. What a signature seen before within
  that window gets is :mod:`facesearch.api.replay`'s rule: refused (``replayed_request``;
  the signatures kept by :class:`~facesearch.api.replay.SharedReplays` in the metadata
  database, so across restarts
  and nodes), answered with the first answer, or run again. Implemented from AWS's
  specification of SigV4 (headers only; presigned query strings are not accepted).
- **Bearer** (native API only, use over TLS): ``Authorization: Bearer <key id>:<secret>``.

:data:`PERMISSIONS` is the only place that says which role may call which operation; the
native router and the Rekognition dispatcher both ask :func:`authorize`. A key with several
roles may call what any of them may.
"""

from __future__ import annotations

import calendar
import enum
import hashlib
import hmac
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, unquote_plus

from facesearch.api.errors import (
    IncompleteSignatureError,
    MissingAuthError,
    SignatureExpiredError,
    SignatureMismatchError,
    UnknownKeyError,
)
from facesearch.errors import AccessDeniedError, ThrottledError
from facesearch.governance.keys import AccessKeys, KeyInfo, KeyNotFoundError, Role



class ReplayGuard(Protocol):
    """Where signatures seen in the clock-skew window are kept
    (:class:`~facesearch.api.replay.ReplayCache`, :class:`~facesearch.api.replay.SharedReplays`)."""

    def admit(self, signature: str, expires_at: float, now: float) -> None:
        """Remember ``signature`` until ``expires_at`` (s since the epoch); raise
        :class:`ReplayedRequestError` if it is already there."""


ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
MUST_SIGN_PREFIXES = ("x-amz-target", "x-facesearch-")
"""Headers that, when sent, must be among a SigV4 request's signed headers: the operation
(``X-Amz-Target``) and facesearch's own headers (purpose, case), which change what a request
means; an unsigned one could be swapped on a captured request."""


class Operation(str, enum.Enum):
    """Every operation of the API: Rekognition's names, and the native API's own."""

    CREATE_COLLECTION = "CreateCollection"
    DELETE_COLLECTION = "DeleteCollection"
    LIST_COLLECTIONS = "ListCollections"
    DESCRIBE_COLLECTION = "DescribeCollection"
    INDEX_FACES = "IndexFaces"
    LIST_FACES = "ListFaces"
    DELETE_FACES = "DeleteFaces"
    SEARCH_FACES = "SearchFaces"
    SEARCH_FACES_BY_IMAGE = "SearchFacesByImage"
    COMPARE_FACES = "CompareFaces"
    DETECT_FACES = "DetectFaces"
    CREATE_USER = "CreateUser"
    DELETE_USER = "DeleteUser"
    LIST_USERS = "ListUsers"
    ASSOCIATE_FACES = "AssociateFaces"
    DISASSOCIATE_FACES = "DisassociateFaces"
    SEARCH_USERS = "SearchUsers"
    SEARCH_USERS_BY_IMAGE = "SearchUsersByImage"
    # native only
    CREATE_KEY = "CreateKey"
    LIST_KEYS = "ListKeys"
    REVOKE_KEY = "RevokeKey"
    LIST_AUDIT_EVENTS = "ListAuditEvents"
    WHO_AM_I = "WhoAmI"
    # accountability (native only)
    GET_POLICY = "GetPolicy"
    SET_POLICY = "SetPolicy"
    ERASE_FACES = "EraseFaces"
    RUN_RETENTION = "RunRetention"
    REVIEW_CANDIDATE = "ReviewCandidate"
    VERIFY_AUDIT = "VerifyAudit"
    EXPORT_AUDIT = "ExportAudit"
    THRESHOLD_RISK = "ThresholdRisk"
    THRESHOLD_FOR_FPIR = "ThresholdForFpir"
    # stored video (Rekognition's names) and their native companions
    START_FACE_SEARCH = "StartFaceSearch"
    GET_FACE_SEARCH = "GetFaceSearch"
    START_FACE_DETECTION = "StartFaceDetection"
    GET_FACE_DETECTION = "GetFaceDetection"
    LIST_VIDEO_JOBS = "ListVideoJobs"
    DESCRIBE_VIDEO_JOB = "DescribeVideoJob"
    GET_VIDEO_JOB_RESULTS = "GetVideoJobResults"
    CANCEL_VIDEO_JOB = "CancelVideoJob"
    DELETE_VIDEO_JOB = "DeleteVideoJob"
    # live stream processors (native; Rekognition's names) and their feeds
    CREATE_STREAM_PROCESSOR = "CreateStreamProcessor"
    START_STREAM_PROCESSOR = "StartStreamProcessor"
    STOP_STREAM_PROCESSOR = "StopStreamProcessor"
    LIST_STREAM_PROCESSORS = "ListStreamProcessors"
    DESCRIBE_STREAM_PROCESSOR = "DescribeStreamProcessor"
    DELETE_STREAM_PROCESSOR = "DeleteStreamProcessor"
    UPDATE_STREAM_PROCESSOR = "UpdateStreamProcessor"
    GET_STREAM_PROCESSOR_METRICS = "GetStreamProcessorMetrics"
    GET_STREAM_PROCESSOR_EVENTS = "GetStreamProcessorEvents"
    # tags of collections and stream processors (Rekognition's names)
    TAG_RESOURCE = "TagResource"
    UNTAG_RESOURCE = "UntagResource"
    LIST_TAGS_FOR_RESOURCE = "ListTagsForResource"
    # the web app: what a reviewer sees, live views, the transparency report (native only)
    GET_FACE_CROPS = "GetFaceCrops"
    GET_STREAM_LIVE_VIEW = "GetStreamProcessorLiveView"
    GET_TRANSPARENCY_REPORT = "GetTransparencyReport"


_A, _I, _S, _U = Role.ADMIN, Role.INDEXER, Role.SEARCHER, Role.AUDITOR
_ALL = frozenset(Role)
_O = Operation

PERMISSIONS: dict[Operation, frozenset[Role]] = {
    _O.CREATE_COLLECTION: frozenset({_A}),
    _O.DELETE_COLLECTION: frozenset({_A}),
    _O.LIST_COLLECTIONS: _ALL,
    _O.DESCRIBE_COLLECTION: _ALL,
    _O.INDEX_FACES: frozenset({_I}),
    _O.LIST_FACES: frozenset({_A, _I, _U}),
    _O.DELETE_FACES: frozenset({_I}),
    _O.SEARCH_FACES: frozenset({_S}),
    _O.SEARCH_FACES_BY_IMAGE: frozenset({_S}),
    _O.COMPARE_FACES: frozenset({_S}),
    _O.DETECT_FACES: frozenset({_S}),
    _O.CREATE_USER: frozenset({_I}),
    _O.DELETE_USER: frozenset({_I}),
    _O.LIST_USERS: frozenset({_A, _I, _U}),
    _O.ASSOCIATE_FACES: frozenset({_I}),
    _O.DISASSOCIATE_FACES: frozenset({_I}),
    _O.SEARCH_USERS: frozenset({_S}),
    _O.SEARCH_USERS_BY_IMAGE: frozenset({_S}),
    _O.CREATE_KEY: frozenset({_A}),
    _O.LIST_KEYS: frozenset({_A, _U}),
    _O.REVOKE_KEY: frozenset({_A}),
    _O.LIST_AUDIT_EVENTS: frozenset({_U}),
    _O.WHO_AM_I: _ALL,
    _O.GET_POLICY: _ALL,
    _O.SET_POLICY: frozenset({_A}),
    _O.ERASE_FACES: frozenset({_A, _I}),
    _O.RUN_RETENTION: frozenset({_A}),
    _O.REVIEW_CANDIDATE: frozenset({_S}),
    _O.VERIFY_AUDIT: frozenset({_U}),
    _O.EXPORT_AUDIT: frozenset({_U}),
    _O.THRESHOLD_RISK: _ALL,
    _O.THRESHOLD_FOR_FPIR: _ALL,
    # Video and stream searches run as the searcher that starts the job or creates the
    # processor (admin keys cannot search, so they cannot create processors either).
    _O.START_FACE_SEARCH: frozenset({_S}),
    _O.GET_FACE_SEARCH: frozenset({_S}),
    _O.START_FACE_DETECTION: frozenset({_S}),
    _O.GET_FACE_DETECTION: frozenset({_S}),
    _O.LIST_VIDEO_JOBS: frozenset({_S, _U}),
    _O.DESCRIBE_VIDEO_JOB: frozenset({_S, _U}),
    _O.GET_VIDEO_JOB_RESULTS: frozenset({_S}),
    _O.CANCEL_VIDEO_JOB: frozenset({_S}),
    _O.DELETE_VIDEO_JOB: frozenset({_A, _S}),
    _O.CREATE_STREAM_PROCESSOR: frozenset({_S}),
    _O.START_STREAM_PROCESSOR: frozenset({_S}),
    _O.STOP_STREAM_PROCESSOR: frozenset({_A, _S}),
    _O.LIST_STREAM_PROCESSORS: frozenset({_A, _S, _U}),
    _O.DESCRIBE_STREAM_PROCESSOR: frozenset({_A, _S, _U}),
    _O.DELETE_STREAM_PROCESSOR: frozenset({_A, _S}),
    _O.UPDATE_STREAM_PROCESSOR: frozenset({_S}),
    _O.GET_STREAM_PROCESSOR_METRICS: frozenset({_A, _S, _U}),
    _O.GET_STREAM_PROCESSOR_EVENTS: frozenset({_S}),
    # Tags label resources for governance (owner, retention class, legal basis): set by
    # admins, read by every role.
    _O.TAG_RESOURCE: frozenset({_A}),
    _O.UNTAG_RESOURCE: frozenset({_A}),
    _O.LIST_TAGS_FOR_RESOURCE: _ALL,
    # Faces are seen by the roles whose work needs them: searchers (human review), indexers
    # (what they enrol), admins (curating and erasing); auditors see aggregates, never faces.
    _O.GET_FACE_CROPS: frozenset({_A, _I, _S}),
    _O.GET_STREAM_LIVE_VIEW: frozenset({_S}),
    _O.GET_TRANSPARENCY_REPORT: frozenset({_U}),
}


def authorize(key: KeyInfo, operation: Operation) -> None:
    """Raise :class:`AccessDeniedError` unless one of ``key``'s roles may call
    ``operation`` (a case-bound key acts without admin: :attr:`KeyInfo.acting_roles`)."""
    if not PERMISSIONS[operation].intersection(key.acting_roles):
        raise AccessDeniedError(
            f"access key {key.key_id} (role {key.role}) is not allowed to call "
            f"{operation.value}")


def allowed_operations(key: KeyInfo) -> list[Operation]:
    """Every operation ``key`` may call (as :func:`authorize` decides), in declaration order:
    what the web page offers a key."""
    out = []
    for op in Operation:
        try:
            authorize(key, op)
        except AccessDeniedError:
            continue
        out.append(op)
    return out


@dataclass(frozen=True)
class SignedRequest:
    """What authentication reads of a request. ``path`` and ``query`` are as sent
    (percent-encoded); ``headers`` are (lower-case name, value) pairs."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class FailedAuthThrottle:
    """Failed authentications counted per source address: after ``limit`` failures within
    ``window_s`` seconds, that source's requests are refused (429, before any credential is
    looked at) until its oldest counted failure is ``window_s`` old. ``limit`` 0 turns the
    throttle off. At most ``max_sources`` addresses are remembered (the least recently failed
    are forgotten first). Thread-safe."""

    def __init__(self, limit: int = 20, window_s: float = 60.0, *,
                 max_sources: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_sources = max_sources
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, source: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(source, ()) if now - t < self.window_s]
        if times:
            self._failures[source] = times
        else:
            self._failures.pop(source, None)
        return times

    def check(self, source: str | None, now: float | None = None) -> None:
        """:class:`ThrottledError` while ``source`` has failed ``limit`` times in the
        window."""
        if not self.limit or source is None:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(source, now)
            if len(times) < self.limit:
                return
            wait = max(1, int(self.window_s - (now - times[0])) + 1)
        raise ThrottledError(f"too many failed authentications from this address; retry in "
                             f"{wait} s", retry_after=wait)

    def failed(self, source: str | None, now: float | None = None) -> None:
        """Count one failed authentication from ``source``."""
        if not self.limit or source is None:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(source, now)
            self._failures.pop(source, None)  # re-inserted last: the most recent failure
            self._failures[source] = (times + [now])[-self.limit:]
            while len(self._failures) > self.max_sources:
                del self._failures[next(iter(self._failures))]


def authenticate(req: SignedRequest, keys: AccessKeys, *, service: str, max_skew_s: float,
                 allow_bearer: bool, now: float | None = None,
                 replays: ReplayGuard | None = None) -> KeyInfo:
    """The active key that signed ``req``, or an :class:`AuthenticationError` subclass.
    With ``replays``, a SigV4 signature is accepted once only."""
    now = time.time() if now is None else now
    auth = _scheme(req, allow_bearer)
    if auth[0] == "Bearer":
        return _bearer(auth[1], keys)
    return _sigv4(req, _parse_sigv4(req, auth[1], keys, service, max_skew_s, now), max_skew_s,
                  now, replays)


def preauthenticate(req: SignedRequest, keys: AccessKeys, *, service: str, max_skew_s: float,
                    allow_bearer: bool, now: float | None = None) -> None:
    """Every check of :func:`authenticate` that needs no body (run before the body is read):
    the scheme, a known active key, for SigV4 the scope, the date and the signed headers, for
    Bearer the secret. Raises what :func:`authenticate` raises."""
    now = time.time() if now is None else now
    auth = _scheme(req, allow_bearer)
    if auth[0] == "Bearer":
        _bearer(auth[1], keys)
    else:
        _parse_sigv4(req, auth[1], keys, service, max_skew_s, now)


def sigv4_signature(authorization: str | None) -> str | None:
    """The ``Signature`` of a SigV4 Authorization header (None for another scheme)."""
    if not authorization or not authorization.startswith(ALGORITHM + " "):
        return None
    for part in authorization[len(ALGORITHM) + 1:].split(","):
        name, _, value = part.strip().partition("=")
        if name == "Signature":
            return value
    return None


def _scheme(req: SignedRequest, allow_bearer: bool) -> tuple[str, str]:
    auth = req.header("authorization")
    if not auth:
        raise MissingAuthError("Missing Authentication Token: sign the request with an access "
                               "key (AWS Signature Version 4)")
    scheme, _, rest = auth.partition(" ")
    if scheme == "Bearer" and allow_bearer:
        return scheme, rest.strip()
    if scheme != ALGORITHM:
        raise IncompleteSignatureError(f"unsupported authorization scheme {scheme!r}; use "
                                       f"{ALGORITHM}" + (" or Bearer" if allow_bearer else ""))
    return scheme, rest


def _lookup(keys: AccessKeys, key_id: str) -> tuple[KeyInfo, str]:
    try:
        found = keys.lookup(key_id)
    except KeyNotFoundError:
        raise UnknownKeyError("The security token included in the request is invalid: unknown "
                              "or revoked access key") from None
    return found.info, found.secret


def _bearer(token: str, keys: AccessKeys) -> KeyInfo:
    key_id, sep, secret = token.partition(":")
    if not sep or not key_id or not secret:
        raise IncompleteSignatureError("a bearer token is '<access key id>:<secret>'")
    info, expected = _lookup(keys, key_id)
    if not hmac.compare_digest(expected.encode(), secret.encode()):
        raise SignatureMismatchError("the secret does not match the access key")
    return info


@dataclass(frozen=True)
class _SigV4:
    """A SigV4 Authorization header, checked but for its signature."""

    info: KeyInfo
    secret: str
    scope: list[str]
    names: list[str]
    signed: str
    signature: str
    stamp: str
    signed_at: float


def _parse_sigv4(req: SignedRequest, params: str, keys: AccessKeys, service: str,
                 max_skew_s: float, now: float) -> _SigV4:
    fields: dict[str, str] = {}
    for part in params.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value
    credential = fields.get("Credential")
    signed = fields.get("SignedHeaders")
    signature = fields.get("Signature")
    if not credential or not signed or not signature:
        raise IncompleteSignatureError("the Authorization header needs Credential, "
                                       "SignedHeaders and Signature")
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise IncompleteSignatureError("Credential must be <key id>/<yyyymmdd>/<region>/"
                                       "<service>/aws4_request")
    key_id, day, _region, scoped_service, _ = scope
    if scoped_service != service:
        raise SignatureMismatchError(f"Credential should be scoped to the correct service: "
                                     f"{service!r}")
    names = signed.split(";")
    if "host" not in names:
        raise IncompleteSignatureError("the signed headers must include host")
    unsigned = sorted({k for k, _ in req.headers
                       if k.startswith(MUST_SIGN_PREFIXES) and k not in names})
    if unsigned:
        raise IncompleteSignatureError(
            f"the signed headers must include {', '.join(unsigned)}: headers that name the "
            "operation, purpose or case must be signed")
    stamp = _timestamp(req, names)
    signed_at = calendar.timegm(time.strptime(stamp, AMZ_DATE))
    if signed_at < now - max_skew_s:
        raise SignatureExpiredError(
            f"Signature expired: {stamp} is now earlier than "
            f"{time.strftime(AMZ_DATE, time.gmtime(now - max_skew_s))} "
            f"({time.strftime(AMZ_DATE, time.gmtime(now))} - {max_skew_s / 60:g} min.)")
    if signed_at > now + max_skew_s:
        raise SignatureExpiredError(
            f"Signature not yet current: {stamp} is still later than "
            f"{time.strftime(AMZ_DATE, time.gmtime(now + max_skew_s))} "
            f"({time.strftime(AMZ_DATE, time.gmtime(now))} + {max_skew_s / 60:g} min.)")
    if stamp[:8] != day:
        raise SignatureMismatchError("the Credential date does not match the request's date")
    info, secret = _lookup(keys, key_id)
    return _SigV4(info, secret, scope, names, signed, signature, stamp, signed_at)


def _sigv4(req: SignedRequest, p: _SigV4, max_skew_s: float, now: float,
           replays: ReplayGuard | None) -> KeyInfo:
    payload = hashlib.sha256(req.body).hexdigest()
    declared = req.header("x-amz-content-sha256")
    if declared is not None and declared != payload:
        raise SignatureMismatchError("x-amz-content-sha256 does not match the request body")
    headers = []
    for name in p.names:
        values = req.header_values(name)
        if not values:
            raise SignatureMismatchError(f"signed header {name!r} is missing from the request")
        headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    canonical = "\n".join([req.method.upper(), canonical_uri(req.path),
                           canonical_query(req.query), "\n".join(headers) + "\n", p.signed,
                           payload])
    string_to_sign = "\n".join([ALGORITHM, p.stamp, "/".join(p.scope[1:]),
                                hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(f"AWS4{p.secret}".encode(), p.scope[1])
    for part in p.scope[2:]:
        k = _hmac(k, part)
    expected = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, p.signature):
        raise SignatureMismatchError(
            "The request signature we calculated does not match the signature you provided. "
            "Check your secret access key and signing method.")
    if replays is not None:
        replays.admit(p.signature, p.signed_at + max_skew_s, now)
    return p.info


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _timestamp(req: SignedRequest, names: Sequence[str]) -> str:
    """The request's signing time as ``yyyymmddThhmmssZ`` (from a signed X-Amz-Date or
    Date header)."""
    amz = req.header("x-amz-date")
    if amz is not None and "x-amz-date" in names:
        try:
            time.strptime(amz, AMZ_DATE)
        except ValueError:
            raise IncompleteSignatureError(f"X-Amz-Date {amz!r} is not yyyymmddThhmmssZ") from None
        return amz
    date = req.header("date")
    if date is not None and "date" in names:
        try:
            return parsedate_to_datetime(date).strftime(AMZ_DATE)
        except (TypeError, ValueError):
            raise IncompleteSignatureError(f"Date {date!r} is not an HTTP date") from None
    raise IncompleteSignatureError("sign an X-Amz-Date (or Date) header")


def canonical_uri(path: str) -> str:
    """The path as sent, dot segments removed, percent-encoded once more (SigV4 for every
    service but S3)."""
    out: list[str] = []
    for seg in (path or "/").split("/"):
        if seg == "..":
            if len(out) > 1:
                out.pop()
        elif seg != ".":
            out.append(seg)
    norm = "/".join(out)
    if not norm.startswith("/"):
        norm = "/" + norm
    if path.endswith("/") and not norm.endswith("/"):
        norm += "/"
    return quote(norm, safe="/~")


def canonical_query(query: str) -> str:
    """Query parameters URI-encoded (RFC 3986 unreserved characters kept), sorted. A ``+`` in
    the query as sent is a space (form encoding, as botocore sends parameters)."""
    pairs = []
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        pairs.append((quote(unquote_plus(name), safe="-_.~"),
                      quote(unquote_plus(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))
