"""What every shape shares: the base model, how numbers are rounded for show, and the guard
that keeps server paths out of the messages shown."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Json = dict[str, Any]


def rnd(value: float, digits: int = 2) -> float:
    """A number as shown: rounded to ``digits`` decimals."""
    return round(float(value), digits)


def _pixels(value: Any) -> Any:
    """Coordinates as shown: 0.1 pixel (a flat box or a list of points)."""
    if isinstance(value, (list, tuple)):
        return [_pixels(v) for v in value]
    return rnd(value, 1)


Pixels = Annotated[list[float], BeforeValidator(_pixels)]
"""A box ``[x1, y1, x2, y2]``, pixels, rounded to 0.1."""

Points = Annotated[list[list[float]], BeforeValidator(_pixels)]
"""``[x, y]`` points, pixels, rounded to 0.1."""

Score = Annotated[float, BeforeValidator(lambda v: rnd(v, 4))]
"""A detector's confidence (0-1), rounded to 1e-4."""

Similarity = Annotated[float, BeforeValidator(lambda v: rnd(v, 3))]
"""A similarity (0-100), rounded to 1e-3."""


class Out(BaseModel):
    """Base of every native response shape: no field beyond those declared; built from the
    service's objects by attribute (``model_validate(obj)``); a field read from an attribute
    of another name says so with ``validation_alias`` (it is shown under its own name)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True, populate_by_name=True)


class ErrorOut(Out):
    code: str = Field(description="stable machine-readable code, e.g. collection_not_found")
    message: str


PRIVATE_PATHS: list[str] = []
"""Server directories no message shown may name (the data directory, as given and resolved):
set by :func:`hide_paths` when an app is made; a message naming one has it replaced by
:data:`PATH_MARK`. The messages are written not to name them; this is the last guard."""

PATH_MARK = "<server path>"


def hide_paths(*paths: str) -> None:
    """Add directories that messages shown must not name (longest first, so a directory
    inside another is replaced whole)."""
    for p in paths:
        p = p.rstrip("/")
        if p and p not in PRIVATE_PATHS:
            PRIVATE_PATHS.append(p)
    PRIVATE_PATHS.sort(key=len, reverse=True)


def public_message(message: str) -> str:
    """``message`` with every :data:`PRIVATE_PATHS` directory (and what follows it up to a
    space or quote) replaced by :data:`PATH_MARK`."""
    for p in PRIVATE_PATHS:
        while p in message:
            i = message.index(p)
            j = i + len(p)
            while j < len(message) and message[j] not in " '\"),;\n":
                j += 1
            message = message[:i] + PATH_MARK + message[j:]
    return message


PublicMessage = Annotated[str | None, BeforeValidator(
    lambda v: None if v is None else public_message(v))]
"""A status message as shown (no server path in it)."""
