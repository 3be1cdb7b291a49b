"""Native routes for access keys: create, list, revoke, and who the caller is."""

from __future__ import annotations

import time

from fastapi import Request
from pydantic import BaseModel, Field, model_validator

from facesearch.api.auth import Operation, allowed_operations
from facesearch.api.context import context
from facesearch.api.native import CallerDep, native_router
from facesearch.governance.keys import Role
from facesearch.shapes.keys import KeyCreatedOut, KeyOut, WhoAmIOut

router = native_router()


class KeyIn(BaseModel):
    role: Role | None = Field(None, description="the key's one role (or give `roles`)")
    roles: list[Role] | None = Field(None, min_length=1, max_length=len(Role),
                                     description="several roles for one key (separation of "
                                                 "duties is the default: give one)")
    label: str | None = Field(None, min_length=1, max_length=200)
    purpose: str | None = Field(None, min_length=1, max_length=500,
                                description="issue the key for one case: its purpose")
    case_ref: str | None = Field(None, min_length=1, max_length=500,
                                 description="issue the key for one case: its reference")
    expires_in_s: float | None = Field(None, gt=0, description="the key expires after this "
                                                               "many seconds")

    @model_validator(mode="after")
    def _one_of(self) -> KeyIn:
        if (self.role is None) == (self.roles is None):
            raise ValueError("give exactly one of role or roles")
        return self

    def role_set(self) -> list[Role]:
        return [self.role] if self.role is not None else list(self.roles or [])



@router.post("/keys", name=Operation.CREATE_KEY.value, status_code=201)
async def create_key(request: Request, body: KeyIn, caller: CallerDep) -> KeyCreatedOut:
    """Create an access key; the secret is in this answer only."""
    ctx = context(request)
    expires = time.time() + body.expires_in_s if body.expires_in_s else None
    new = await ctx.io(lambda: ctx.fs.keys.create(
        body.role_set(), body.label, purpose=body.purpose, case_ref=body.case_ref,
        expires_at=expires, caller=caller))
    return KeyCreatedOut.of(new)


@router.get("/keys", name=Operation.LIST_KEYS.value)
async def list_keys(request: Request) -> list[KeyOut]:
    """Access keys (without secrets), revoked ones included."""
    ctx = context(request)
    return [KeyOut.model_validate(k) for k in await ctx.io(ctx.fs.keys.list_keys)]


@router.delete("/keys/{key_id}", name=Operation.REVOKE_KEY.value)
async def revoke_key(request: Request, key_id: str, caller: CallerDep) -> KeyOut:
    """Revoke an access key (at once)."""
    ctx = context(request)
    return KeyOut.model_validate(await ctx.io(lambda: ctx.fs.keys.revoke(key_id, caller=caller)))


@router.get("/whoami", name=Operation.WHO_AM_I.value)
async def who_am_i(request: Request, caller: CallerDep) -> WhoAmIOut:
    """The access key the request was signed with, its roles, and what it may call."""
    ctx = context(request)
    key = await ctx.io(lambda: ctx.fs.keys.describe(caller.actor))
    return WhoAmIOut(key_id=caller.actor, role=caller.role,
                     roles=caller.role.split(",") if caller.role else [],
                     operations=[op.value for op in allowed_operations(key)])

