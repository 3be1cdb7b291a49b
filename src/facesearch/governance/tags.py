"""Tags: key-value labels on collections and stream processors (as Rekognition's TagResource,
UntagResource and ListTagsForResource), which agencies use for governance (owner, legal basis,
retention class, case).

At most :data:`~facesearch.limits.MAX_TAGS` tags per resource; keys have 1-128 characters,
values 0-256, both of letters, digits, spaces and ``_.:/=+-@`` (Unicode letters and digits
count), and a key may not start with ``aws:``. Tags are deleted with their resource. Every
change is audited.
"""

from __future__ import annotations

import enum
import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import Connection, delete, insert, select

from facesearch import limits
from facesearch.errors import InvalidParameterError
from facesearch.governance.trail import AuditTrail
from facesearch.storage.schema import tags_t
from facesearch.storage.store import Store
from facesearch.types import Caller

_TAG_PUNCTUATION = frozenset("_.:/=+-@")


class ResourceKind(str, enum.Enum):
    """What can carry tags (the resource type of a Rekognition ARN)."""

    COLLECTION = "collection"
    STREAM_PROCESSOR = "streamprocessor"


Visible = Callable[[ResourceKind, str, Caller | None], None]
"""Raises the resource's not-found error unless ``caller`` may see it (case-bound keys see
only their case's stream processors)."""


def _tag_text(text: str, what: str, low: int, high: int) -> str:
    if not isinstance(text, str) or not low <= len(text) <= high:
        raise InvalidParameterError(f"a tag {what} has {low}-{high} characters, got {text!r}")
    for ch in text:
        cat = unicodedata.category(ch)
        if not (cat[0] in "LNZ" or ch in _TAG_PUNCTUATION):
            raise InvalidParameterError(f"tag {what} {text!r}: {ch!r} is not allowed (letters, "
                                        "digits, spaces and _.:/=+-@)")
    return text


def tag_key(key: str) -> str:
    """A valid tag key (1-128 characters; not starting with ``aws:``)."""
    _tag_text(key, "key", 1, limits.MAX_TAG_KEY)
    if key.startswith("aws:"):
        raise InvalidParameterError(f"tag key {key!r}: keys starting with 'aws:' are reserved")
    return key


def validate_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Valid tags (at most :data:`~facesearch.limits.MAX_TAGS`)."""
    if len(tags) > limits.MAX_TAGS:
        raise InvalidParameterError(f"at most {limits.MAX_TAGS} tags per resource")
    return {tag_key(k): _tag_text(v, "value", 0, limits.MAX_TAG_VALUE) for k, v in tags.items()}


class Tags:
    """Tags of one data directory's collections and stream processors. ``visible`` checks
    that a resource exists and that the caller may see it."""

    def __init__(self, store: Store, trail: AuditTrail, visible: Visible) -> None:
        self.store = store
        self.trail = trail
        self.visible = visible

    def tag(self, kind: ResourceKind, name: str, tags: Mapping[str, str], *,
            caller: Caller | None = None) -> dict[str, str]:
        """Add or replace tags; the resource's tags after. A resource may carry at most
        :data:`~facesearch.limits.MAX_TAGS` tags."""
        new = validate_tags(tags)
        self.visible(kind, name, caller)
        with self.store.transaction() as conn:
            have = self._get(conn, kind, name)
            merged = {**have, **new}
            if len(merged) > limits.MAX_TAGS:
                raise InvalidParameterError(
                    f"{kind.value} {name!r} would carry {len(merged)} tags; at most "
                    f"{limits.MAX_TAGS}")
            if new:
                conn.execute(delete(tags_t).where(tags_t.c.kind == kind.value,
                                                  tags_t.c.name == name,
                                                  tags_t.c.key.in_(list(new))))
                conn.execute(insert(tags_t), [{"kind": kind.value, "name": name, "key": k,
                                               "value": v} for k, v in new.items()])
        self._record("tags.set", kind, name, caller, new)
        return merged

    def untag(self, kind: ResourceKind, name: str, keys: Iterable[str], *,
              caller: Caller | None = None) -> dict[str, str]:
        """Remove tags by key (keys the resource does not carry are ignored); its tags after."""
        wanted = [tag_key(k) for k in keys]
        if len(wanted) > limits.MAX_TAGS:
            raise InvalidParameterError(f"at most {limits.MAX_TAGS} tag keys per request")
        self.visible(kind, name, caller)
        with self.store.transaction() as conn:
            if wanted:
                conn.execute(delete(tags_t).where(tags_t.c.kind == kind.value,
                                                  tags_t.c.name == name,
                                                  tags_t.c.key.in_(wanted)))
            left = self._get(conn, kind, name)
        self._record("tags.remove", kind, name, caller, {k: None for k in wanted})
        return left

    def get(self, kind: ResourceKind, name: str, *,
            caller: Caller | None = None) -> dict[str, str]:
        """The resource's tags."""
        self.visible(kind, name, caller)
        with self.store.transaction() as conn:
            return self._get(conn, kind, name)

    @staticmethod
    def _get(conn: Connection, kind: ResourceKind, name: str) -> dict[str, str]:
        rows = conn.execute(
            select(tags_t.c.key, tags_t.c.value).where(tags_t.c.kind == kind.value,
                                                       tags_t.c.name == name)
            .order_by(tags_t.c.key)).all()
        return {k: v for k, v in rows}

    def _record(self, operation: str, kind: ResourceKind, name: str, caller: Caller | None,
                tags: Mapping[str, str | None]) -> None:
        self.trail.note(operation, caller,
                        collection=name if kind is ResourceKind.COLLECTION else None,
                        details={"resource": kind.value, "name": name,
                                 "tags": json.dumps(dict(tags), sort_keys=True,
                                                    ensure_ascii=False)})
