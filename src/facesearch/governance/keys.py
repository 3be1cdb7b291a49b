"""Access keys service: API credentials that the operator creates, lists and revokes.

A key is an id (``FSAK`` + 16 characters, shown in logs and the audit trail), a secret (shown
once, at creation) and one or more roles (:class:`Role`). One role per key is the default and
keeps separation of duties; a key may hold several when one program needs them (an
application that creates its collection, indexes and searches: ``admin``, ``indexer`` and
``searcher``), and it may then call what any of its roles may. The roles are stored in the
``role`` column, comma-separated in :class:`Role` order. SigV4 verification needs the secret itself
(an HMAC key), so it cannot be stored as a one-way hash: secrets are sealed with AES-256-GCM
(:class:`facesearch.storage.crypto.Sealer`, the key id as associated data) under a master key that is
either given as ``FACESEARCH_KEYS_MASTER_KEY`` (base64 of 32 bytes), or kept in the file
``FACESEARCH_KEYS_MASTER_KEY_FILE`` names (outside the data directory, so that a copy of the
directory yields no secret), or by default in ``<home>/keys/access-keys-master.key``; a missing
file is created with mode 0600 on first use. The database alone does not reveal a secret; the
database together with the master key does.

A key may be issued for one case: it then carries a purpose and a case reference that every
call made with it is recorded under (AWS SDK calls have no fields for them), and usually an
expiry time after which it no longer authenticates.

Keys live in the ``access_keys`` table of the data directory's database; revoked keys stay
listed (with the time of revocation) for the record. Creating and revoking keys is audited.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Row,
    insert,
    select,
    update,
)

from facesearch.errors import (
    AccessDeniedError,
    EncryptionError,
    InvalidParameterError,
    NotFoundError,
)
from facesearch.governance.audit.event import AuditEvent
from facesearch.governance.audit.log import AuditLog
from facesearch.storage.crypto import Sealer, create_secret_file
from facesearch.storage.store import Store
from facesearch.types import Caller

MASTER_KEY_FILE = "keys/access-keys-master.key"
_KEY_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

from facesearch.storage.schema import access_keys_t


class Role(str, enum.Enum):
    """What a key may do (the operations of each role are in ``facesearch.api.auth``)."""

    ADMIN = "admin"
    """Collections and keys."""
    INDEXER = "indexer"
    """Index and delete faces; users and their faces."""
    SEARCHER = "searcher"
    """Search, compare, detect."""
    AUDITOR = "auditor"
    """Read-only: collections, faces, users, keys, the audit trail."""


class KeyNotFoundError(NotFoundError):
    code = "key_not_found"


Roles = tuple[Role, ...]
"""A key's roles: distinct, in :class:`Role` order."""


def parse_roles(roles: Role | str | Iterable[Role | str]) -> Roles:
    """One role or several (a role, its name, or an iterable of them; a name may list several,
    comma-separated) as :data:`Roles`; :class:`InvalidParameterError` for an unknown role or
    none."""
    items = [roles] if isinstance(roles, str) else list(roles)  # a Role is a str too
    found: set[Role] = set()
    for item in items:
        for name in [item] if isinstance(item, Role) else item.split(","):
            try:
                found.add(Role(name.strip()))
            except ValueError:
                raise InvalidParameterError(
                    f"unknown role {name.strip()!r}; choose from "
                    f"{', '.join(x.value for x in Role)}") from None
    if not found:
        raise InvalidParameterError("a key needs at least one role")
    return tuple(r for r in Role if r in found)


def role_names(roles: Roles) -> str:
    """Roles as stored, logged and audited: their names joined by ``,`` (``indexer,searcher``)."""
    return ",".join(r.value for r in roles)


@dataclass(frozen=True)
class KeyInfo:
    """An access key without its secret. Times are seconds since the epoch.

    ``purpose`` and ``case_ref``: set for a key issued for one case; every call made with the
    key is recorded under them. ``expires_at``: after it the key no longer authenticates.
    """

    key_id: str
    roles: Roles
    label: str | None
    created_at: float
    revoked_at: float | None
    purpose: str | None = None
    case_ref: str | None = None
    expires_at: float | None = None

    @property
    def role(self) -> str:
        """The roles as one string (``indexer,searcher``), as callers and the audit trail
        name them."""
        return role_names(self.roles)

    @property
    def acting_roles(self) -> Roles:
        """The roles the key may act in: its roles, less ``admin`` for a key bound to a case
        (a case-bound key cannot hold admin; one stored before that rule acts without it)."""
        if self.case_ref is None:
            return self.roles
        return tuple(r for r in self.roles if r is not Role.ADMIN)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only time its secret is available to show."""

    info: KeyInfo
    secret: str


@dataclass(frozen=True)
class ActiveKey:
    """An active key with its secret, for verifying a request's signature."""

    info: KeyInfo
    secret: str


def load_master_key(home: Path, given: str | None, file: Path | None = None) -> bytes:
    """The master key: ``given`` (base64 of 32 bytes), else the key in ``file`` (best kept
    outside the data directory), else :data:`MASTER_KEY_FILE` in ``home``; a missing file is
    created with a new key, mode 0600, in a 0700 folder."""
    if given:
        return _decode_master(given, "FACESEARCH_KEYS_MASTER_KEY")
    path = file if file is not None else home / MASTER_KEY_FILE
    if not path.exists():
        create_secret_file(path, base64.b64encode(os.urandom(32)) + b"\n")
    try:
        return _decode_master(path.read_text().strip(), str(path))
    except OSError as exc:
        raise EncryptionError(f"cannot read the keys master key {path}: {exc.strerror}") from None


def _decode_master(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise EncryptionError(f"{where}: the keys master key must be base64 of 32 bytes")
    return key


KEY_PREFIX = "FSAK"
"""Access key ids start with it; other actors (``local:<user>``, ``system:...``) are not keys
and are never revoked."""


def _new_key_id() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_KEY_ID_CHARS) for _ in range(16))


class AccessKeys:
    """Create, list, revoke and look up access keys in one data directory's database."""

    def __init__(self, store: Store, master_key: Callable[[], bytes],
                 clock: Callable[[], float] = time.time,
                 audit: AuditLog | None = None) -> None:
        self.store = store
        self.clock = clock
        self._master_key = master_key
        self._sealer: Sealer | None = None
        self._lock = threading.Lock()
        self.audit = audit
        self.revoke_hooks: list[Callable[[str], None]] = []
        """Called with the key id after a revocation (in this process): the services stop
        what the key started (stream processors, video jobs, live feeds)."""

    def _record(self, operation: str, caller: Caller | None, info: KeyInfo) -> None:
        if self.audit is None:
            return
        c = caller or Caller.local()
        self.audit.append(AuditEvent(
            operation=operation, actor=c.actor, role=c.role, purpose=c.purpose,
            case_ref=c.case_ref, client=c.client,
            details={"key_id": info.key_id, "key_role": info.role, "label": info.label,
                     "key_purpose": info.purpose, "key_case": info.case_ref,
                     "expires_at": info.expires_at}))

    def _seal(self) -> Sealer:
        with self._lock:
            if self._sealer is None:
                self._sealer = Sealer(self._master_key())
            return self._sealer

    def create(self, role: Role | str | Iterable[Role | str], label: str | None = None, *,
               purpose: str | None = None, case_ref: str | None = None,
               expires_at: float | None = None, caller: Caller | None = None) -> NewKey:
        """A new active key for ``role`` (one role, or several: see :func:`parse_roles`); the
        returned secret is not retrievable later. Creating it is audited with its roles.

        ``purpose`` and ``case_ref`` (both or neither) bind the key to one case; such a key
        cannot hold ``admin`` (keys and collections are not any one case's), and a caller
        bound to a case creates no keys at all. ``expires_at`` (seconds since the epoch) ends
        its validity.
        """
        self._unbound_caller(caller, "create access keys")
        roles = parse_roles(role)
        if label is not None and not 1 <= len(label) <= 200:
            raise InvalidParameterError("a key label has 1-200 characters")
        if (purpose is None) != (case_ref is None):
            raise InvalidParameterError("a key for a case needs both a purpose and a case "
                                        "reference")
        if case_ref is not None and Role.ADMIN in roles:
            raise InvalidParameterError("a key bound to a case cannot hold the admin role")
        for name, text in (("purpose", purpose), ("case reference", case_ref)):
            if text is not None and not 1 <= len(text) <= 500:
                raise InvalidParameterError(f"a key's {name} has 1-500 characters")
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidParameterError("a key's expiry must be in the future")
        key_id = _new_key_id()
        secret = secrets.token_urlsafe(30)
        sealed = self._seal().seal(secret.encode(), key_id.encode())
        with self.store.transaction() as conn:
            conn.execute(insert(access_keys_t).values(
                key_id=key_id, role=role_names(roles), label=label, secret=sealed,
                created_at=now,
                purpose=purpose, case_ref=case_ref, expires_at=expires_at))
        info = KeyInfo(key_id, roles, label, now, None, purpose, case_ref, expires_at)
        self._record("key.create", caller, info)
        return NewKey(info, secret)

    def list_keys(self, include_revoked: bool = True) -> list[KeyInfo]:
        """Keys in creation order."""
        q = select(access_keys_t).order_by(access_keys_t.c.id)
        if not include_revoked:
            q = q.where(access_keys_t.c.revoked_at.is_(None))
        with self.store.transaction() as conn:
            return [_info(r) for r in conn.execute(q)]

    def describe(self, key_id: str) -> KeyInfo:
        with self.store.transaction() as conn:
            r = conn.execute(select(access_keys_t)
                             .where(access_keys_t.c.key_id == key_id)).first()
        if r is None:
            raise KeyNotFoundError(f"access key {key_id!r} does not exist")
        return _info(r)

    def revoke(self, key_id: str, *, caller: Caller | None = None) -> KeyInfo:
        """Revoke a key (at once, in every server on this data directory); idempotent. A
        caller bound to a case revokes none."""
        self._unbound_caller(caller, "revoke access keys")
        with self.store.transaction() as conn:
            conn.execute(update(access_keys_t).where(
                access_keys_t.c.key_id == key_id, access_keys_t.c.revoked_at.is_(None),
            ).values(revoked_at=self.clock()))
        info = self.describe(key_id)
        self._record("key.revoke", caller, info)
        for hook in list(self.revoke_hooks):
            hook(key_id)
        return info

    def problem(self, actor: str) -> str | None:
        """Why the access key ``actor`` may no longer act (revoked, expired, gone), or None
        while it may (and for actors that are not access keys)."""
        if not actor.startswith(KEY_PREFIX):
            return None
        try:
            info = self.describe(actor)
        except KeyNotFoundError:
            return f"the access key {actor} no longer exists"
        if info.revoked_at is not None:
            return f"the access key {actor} was revoked"
        if info.expired(self.clock()):
            return f"the access key {actor} has expired"
        return None

    def _unbound_caller(self, caller: Caller | None, what: str) -> None:
        """:class:`AccessDeniedError` when ``caller`` is an access key bound to a case."""
        if self.case_of(caller) is not None:
            raise AccessDeniedError(f"a key bound to a case cannot {what}")

    def case_of(self, caller: Caller | None) -> str | None:
        """The case a case-bound access key is confined to; None when ``caller`` is not
        confined (a key issued for no case, the CLI's local user, or no caller given)."""
        if caller is None or not caller.actor.startswith(KEY_PREFIX):
            return None
        try:
            return self.describe(caller.actor).case_ref
        except KeyNotFoundError:
            raise AccessDeniedError(f"access key {caller.actor} is unknown") from None

    def lookup(self, key_id: str) -> ActiveKey:
        """The active key ``key_id`` with its secret; :class:`KeyNotFoundError` when the key is
        unknown or revoked."""
        if not 1 <= len(key_id) <= 128:
            raise KeyNotFoundError("unknown access key")
        with self.store.transaction() as conn:
            r = conn.execute(select(access_keys_t)
                             .where(access_keys_t.c.key_id == key_id)).first()
        if r is None or r.revoked_at is not None:
            raise KeyNotFoundError(f"access key {key_id!r} is unknown or revoked")
        if r.expires_at is not None and self.clock() >= r.expires_at:
            raise KeyNotFoundError(f"access key {key_id!r} has expired")
        secret = self._seal().open(r.secret, key_id.encode()).decode()
        return ActiveKey(_info(r), secret)


def _info(r: Row[Any]) -> KeyInfo:
    return KeyInfo(r.key_id, parse_roles(r.role), r.label, r.created_at, r.revoked_at,
                   r.purpose, r.case_ref, r.expires_at)
