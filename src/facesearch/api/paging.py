"""Opaque paging tokens: the services' cursors (a row id or a name) wrapped so that clients
treat them as opaque strings, and checked on the way back in."""

from __future__ import annotations

import base64
import binascii

from facesearch.api.errors import InvalidPaginationTokenError

MAX_TOKEN = 255


def encode_token(kind: str, cursor: int | str) -> str:
    """A token for the page after ``cursor`` of a listing of ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}:{cursor}".encode()).decode().rstrip("=")


def decode_token(kind: str, token: str) -> str:
    """The cursor in ``token``; :class:`InvalidPaginationTokenError` unless it is a token of a
    ``kind`` listing."""
    bad = InvalidPaginationTokenError(f"invalid pagination token for this {kind} listing")
    if not token or len(token) > MAX_TOKEN:
        raise bad
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    prefix, sep, cursor = text.partition(":")
    if prefix != kind or not sep or not cursor:
        raise bad
    return cursor


def decode_row(kind: str, token: str | None) -> int:
    """A row-id cursor (0 when there is no token)."""
    if token is None:
        return 0
    cursor = decode_token(kind, token)
    if not cursor.isdigit():
        raise InvalidPaginationTokenError(f"invalid pagination token for this {kind} listing")
    return int(cursor)


def page_by_name(names: list[str], token: str | None, limit: int,
                 kind: str) -> tuple[list[str], str | None]:
    """A page of sorted ``names`` after the token's name, and the next page's token."""
    after = decode_token(kind, token) if token else None
    rest = sorted(n for n in names if after is None or n > after)
    page = rest[:limit]
    return page, encode_token(kind, page[-1]) if len(rest) > limit else None
