"""Access keys as shown: a key (never its secret but once, when it is made) and who a request
is."""

from __future__ import annotations

from pydantic import Field

from facesearch.governance.keys import NewKey, Role
from facesearch.shapes.base import Out


class KeyOut(Out):
    """An access key, from a :class:`~facesearch.governance.keys.KeyInfo`."""

    key_id: str
    role: str = Field(description="the key's roles, comma-separated (e.g. indexer,searcher)")
    roles: list[Role]
    label: str | None
    created_at: float
    revoked_at: float | None
    active: bool
    purpose: str | None = None
    case_ref: str | None = None
    expires_at: float | None = None


class KeyCreatedOut(KeyOut):
    """A new key, from a :class:`~facesearch.governance.keys.NewKey`: the key and its
    secret."""

    secret: str = Field(description="shown once; keep it safe")

    @classmethod
    def of(cls, new: NewKey) -> KeyCreatedOut:
        return cls(**KeyOut.model_validate(new.info).model_dump(), secret=new.secret)


class WhoAmIOut(Out):
    key_id: str
    role: str | None = Field(description="the key's roles, comma-separated")
    roles: list[str] = Field(description="the key's roles")
    operations: list[str] = Field(default_factory=list,
                                  description="the operations this key may call (the web "
                                              "page shows what they allow)")
