"""Collections as shown: a collection's size and model, pages of collections, and its use
policy (stated and effective)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from facesearch.limits import MAX_RESULTS
from facesearch.shapes.base import Out


class CollectionOut(Out):
    """A collection, from a :class:`~facesearch.services.collection.CollectionInfo`."""

    name: str
    model_version: str
    created_at: float = Field(description="seconds since the epoch")
    faces: int = Field(validation_alias="face_count")
    users: int = Field(validation_alias="user_count")
    images: int = Field(validation_alias="image_count")


class CollectionsOut(Out):
    collections: list[CollectionOut]
    next_token: str | None = None


class PolicyIn(BaseModel):
    """A collection's policy as stated; omitted fields take the defaults of the collection's
    kind (the body of ``PUT /v1/collections/{name}/policy``, and ``stated`` of its answer)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)
    law_enforcement: bool = False
    require_purpose: bool | None = None
    threshold_floor: float | None = Field(None, ge=0, le=100)
    max_results_cap: int | None = Field(None, ge=1, le=MAX_RESULTS)
    retention_days: float | None = Field(None, gt=0)
    min_probe_recognisability: float | None = Field(
        None, ge=0, le=100, description="refuse probe faces less recognisable than this "
                                        "(default: 40 for law enforcement, else 0)")


class EffectivePolicyOut(Out):
    """The policy in force, from a :class:`~facesearch.governance.policy.EffectivePolicy`."""

    law_enforcement: bool
    require_purpose: bool
    threshold_floor: float
    floor_false_match_rate: float | None = Field(
        validation_alias="floor_fmr",
        description="calibrated false-match rate per comparison at the floor, when known")
    max_results_cap: int
    retention_days: float | None
    min_probe_recognisability: float = Field(
        0.0, description="1:N image searches refuse probe faces less recognisable (0-100)")


class PolicyOut(Out):
    collection: str = Field(validation_alias="name")
    stated: PolicyIn = Field(validation_alias="settings")
    effective: EffectivePolicyOut = Field(validation_alias="policy")
