"""Webhook delivery: JSON POSTs with a timeout and a few retries.

Failures are returned (and counted), never raised: a dead receiver must not fail a video job or
stall a live stream. :func:`post_json` delivers one message (blocking); :class:`WebhookSender`
delivers a stream of messages from its own thread through a bounded queue that drops the oldest
message when the receiver cannot keep up.

Outbound targets (webhooks here, stream inputs in :mod:`facesearch.media.stream`) pass an
:class:`EgressPolicy`: a host must resolve only to public addresses, unless the operator
allow-lists it (``FACESEARCH_EGRESS_ALLOW``). Redirects are never followed, and every failure
reads the same to the client (the details go to the server log), so that a job's or a
processor's error text cannot be used to map which internal ports answer.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from facesearch.errors import InvalidParameterError

log = logging.getLogger(__name__)

JsonObject = Mapping[str, object]

DELIVERY_FAILED = "the webhook could not be delivered (see the server log)"
"""The one failure reason a client sees, whatever went wrong (refused, timed out, HTTP error)."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefusedError(InvalidParameterError):
    """An outbound target is not allowed (private, loopback, link-local, or unresolvable)."""


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
"""NAT64 prefixes (RFC 6052 well-known, RFC 8215 local use): the last 32 bits are IPv4."""
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
"""SIIT IPv4-translated addresses (RFC 2765): the last 32 bits are IPv4."""
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
"""Deprecated IPv4-compatible addresses (``::a.b.c.d``, RFC 4291)."""


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
                  ) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a mapping, translation or tunnel
    (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, SIIT
    ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``,
    Teredo ``2001::/32``'s client), else None. Python's ``ipaddress`` calls several of
    these forms global although they reach loopback or private IPv4 hosts."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE or ip in _IPV4_TRANSLATED or any(ip in n for n in _NAT64):
        return low32
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which hosts webhooks and network stream inputs may reach.

    A host is allowed when it is named in ``hosts`` (exact, case-insensitive), or when every
    address it resolves to is public (``ipaddress``'s ``is_global``, not multicast) or inside
    one of ``networks``. Loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, the cloud
    metadata service, fe80::/10), private (RFC 1918, fc00::/7), CGNAT and reserved ranges are
    refused otherwise, as is every IPv6 form that embeds such an IPv4 address
    (:func:`embedded_ipv4`: IPv4-mapped and -compatible, SIIT, NAT64, 6to4, Teredo).
    ``allow_all`` turns the check off (library and test use only).
    """

    networks: tuple[IpNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)
    allow_all: bool = False

    @classmethod
    def parse(cls, text: str | Sequence[str]) -> EgressPolicy:
        """From a comma-separated list of CIDR networks, addresses and host names
        (``FACESEARCH_EGRESS_ALLOW``), e.g. ``127.0.0.1/32,10.2.0.0/16,cam.local``."""
        items = text.split(",") if isinstance(text, str) else list(text)
        nets: list[IpNetwork] = []
        hosts: set[str] = set()
        for raw in (i.strip() for i in items):
            if not raw:
                continue
            try:
                nets.append(ipaddress.ip_network(raw, strict=False))
            except ValueError:
                hosts.add(raw.lower().rstrip("."))
        return cls(tuple(nets), frozenset(hosts))

    def admitting(self, url: str) -> EgressPolicy:
        """This policy with ``url``'s host allowed too (an operator's camera: its own host
        is trusted, but where it redirects or what its playlist names is not)."""
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        if self.allow_all or not host:
            return self
        return EgressPolicy(self.networks, self.hosts | {host})

    def _address_ok(self, addr: str) -> bool:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
        inner = embedded_ipv4(ip)
        if any(a in n for n in self.networks for a in (ip, inner) if a is not None
               and a.version == n.version):
            return True
        if inner is not None:
            # A translation or tunnel form reaches the IPv4 address it embeds.
            return inner.is_global and not inner.is_multicast
        return ip.is_global and not ip.is_multicast

    def addresses(self, host: str | None, port: int | None, what: str) -> list[str]:
        """The addresses ``host`` resolves to, when this policy allows it (see the class),
        else :class:`EgressRefusedError` (one message for every reason). Connecting to one
        of these, rather than resolving again, leaves no room for a second DNS answer."""
        refused = EgressRefusedError(
            f"the {what} is not allowed: its host must resolve to public addresses only "
            "(private, loopback and link-local targets need FACESEARCH_EGRESS_ALLOW)")
        if not host:
            raise refused
        name = host.lower().rstrip(".")
        try:
            infos = socket.getaddrinfo(name, port or 0, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError):
            raise refused from None
        addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
        if self.allow_all or name in self.hosts:
            return addrs
        if not addrs or not all(self._address_ok(a) for a in addrs):
            raise refused
        return addrs

    def check_host(self, host: str | None, port: int | None, what: str) -> None:
        """Refuse ``host`` unless allowed (see the class); one message for every reason."""
        if self.allow_all:
            return
        if host and host.lower().rstrip(".") in self.hosts:
            return
        self.addresses(host, port, what)

    def check_url(self, url: str, what: str) -> None:
        """:meth:`check_host` on the URL's host and port."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise EgressRefusedError(f"the {what} has an invalid port") from None
        self.check_host(parts.hostname, port, what)


OPEN = EgressPolicy(allow_all=True)
"""No egress limits (the library default when no policy is given)."""


def validate_url(url: str, egress: EgressPolicy = OPEN) -> str:
    """An absolute http(s) URL whose host ``egress`` allows, or :class:`InvalidParameterError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidParameterError(f"webhook URL must be an absolute http(s) URL, got {url!r}")
    egress.check_url(url, "webhook URL")
    return url


def post_json(url: str, payload: JsonObject, *, timeout_s: float = 10.0, attempts: int = 3,
              backoff_s: float = 1.0, stop: threading.Event | None = None,
              client: httpx.Client | None = None,
              egress: EgressPolicy = OPEN) -> str | None:
    """POST ``payload`` as JSON; None when a 2xx answer came, else :data:`DELIVERY_FAILED`
    (the actual reason is logged, never returned).

    Retries ``attempts`` times in all, waiting ``backoff_s`` doubled each time (cut short by
    ``stop``). The host is checked against ``egress`` before each attempt (its addresses may
    have changed since the URL was accepted); redirects are not followed.
    """
    reason = "not attempted"
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
    try:
        for attempt in range(attempts):
            try:
                egress.check_url(url, "webhook URL")
                r = http.post(url, json=payload, timeout=timeout_s, follow_redirects=False)
                if 200 <= r.status_code < 300:
                    return None
                reason = f"HTTP {r.status_code}"
            except EgressRefusedError as exc:
                reason = exc.message
                break
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                delay = backoff_s * 2 ** attempt
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    threading.Event().wait(delay)
    finally:
        if own:
            http.close()
    log.warning("webhook delivery failed: %s", reason)
    return DELIVERY_FAILED


class WebhookSender:
    """Posts messages to one URL from a worker thread; at most ``max_queue`` waiting (the
    oldest is dropped beyond that). ``delivered``, ``failed``, ``dropped`` and ``last_error``
    say how it went."""

    def __init__(self, url: str, *, max_queue: int = 1000, timeout_s: float = 5.0,
                 attempts: int = 2, name: str = "webhook",
                 egress: EgressPolicy = OPEN) -> None:
        self.url = validate_url(url, egress)
        self.egress = egress
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: collections.deque[JsonObject] = collections.deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, payload: JsonObject) -> None:
        """Queue a message (never blocks)."""
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(payload)
            self._cond.notify()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                with self._cond:
                    while not self._queue and not self._stop.is_set():
                        self._cond.wait()
                    if not self._queue:
                        return
                    payload = self._queue.popleft()
                reason = post_json(self.url, payload, timeout_s=self.timeout_s,
                                   attempts=self.attempts, stop=self._stop, client=client,
                                   egress=self.egress)
                if reason is None:
                    self.delivered += 1
                else:
                    self.failed += 1
                    self.last_error = reason

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop after the queued messages are sent (or ``timeout_s`` passed)."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
        self._thread.join(timeout_s)
