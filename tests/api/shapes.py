"""The shape walker: every Rekognition response the tests receive, checked against botocore's
service model for its operation (the output shape AWS's SDKs parse).

botocore's parser drops members it does not know and trusts types, so a wrong response can
look right to a client; this walks the raw JSON body instead: no member the shape lacks, every
required member present, types as the shape states (string, integer, float, boolean,
timestamp, list, map, structure), string enums and patterns, and the string lengths, list
sizes and numeric ranges the model gives (``DeletedFaces``, a ``FaceIdList`` of at least one
item, is left out when nothing was deleted, as AWS does). An error's ``__type`` must be one the
operation's model lists, or one of AWS's protocol-wide errors (:data:`COMMON_ERRORS`).
:func:`watch` installs it on a boto3 client: a violation fails the call that received it (an
``AssertionError`` out of the client call). :data:`WALKED` counts the operations walked in
this process.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from typing import Any

from botocore.model import OperationModel, Shape

WALKED: Counter[str] = Counter()
"""Successful responses walked, per operation name."""

COMMON_ERRORS = frozenset({
    "MissingAuthenticationTokenException", "IncompleteSignatureException",
    "UnrecognizedClientException", "InvalidSignatureException", "UnknownOperationException",
    "SerializationException", "ValidationException", "AccessDeniedException",
    "ThrottlingException", "InternalServerError"})
"""Errors of the AWS JSON protocol any operation may answer (authentication, a body that is not
the operation's input, throttling), listed or not in its model."""


def _pattern_ok(pattern: str, text: str) -> bool:
    """Java-style full match of an AWS model pattern. ``\\p{L}``, ``\\p{N}`` and ``\\p{Z}``
    (Unicode letters, digits, separators; Python's ``re`` lacks them) are matched by mapping
    each such character to a placeholder first; a leading ``(?!aws:)`` is checked on the
    original text."""
    if pattern.startswith("^(?!aws:)"):
        if text.startswith("aws:"):
            return False
        pattern = "^" + pattern[len("^(?!aws:)"):]
    if "\\p{" in pattern:
        def placeholder(ch: str) -> str:
            cat = unicodedata.category(ch)[0]
            return {"L": "a", "N": "0", "Z": " "}.get(cat, ch)

        text = "".join(placeholder(c) for c in text)
        pattern = pattern.replace("\\p{L}", "a").replace("\\p{N}", "0").replace("\\p{Z}", " ")
    return re.fullmatch(pattern, text) is not None


def _range(shape: Shape, value: float, path: str, what: str) -> list[str]:
    out = []
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and value < lo:
        out.append(f"{path}: {what} {value} is under the minimum {lo} of {shape.name}")
    if hi is not None and value > hi:
        out.append(f"{path}: {what} {value} is over the maximum {hi} of {shape.name}")
    return out


def walk(shape: Shape, value: Any, path: str = "$") -> list[str]:
    """What is wrong with ``value`` as an instance of ``shape`` (empty: nothing)."""
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({shape.name}), got {type(value).__name__}"]
        problems = [f"{path}.{k}: {shape.name} has no member {k!r}"
                    for k in value if k not in shape.members]
        problems += [f"{path}: required member {k!r} of {shape.name} is missing"
                     for k in shape.required_members if k not in value]
        for k, v in value.items():
            if k in shape.members:
                problems += walk(shape.members[k], v, f"{path}.{k}")
        return problems
    if t == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list ({shape.name}), got {type(value).__name__}"]
        problems = _range(shape, len(value), path, "size")
        for i, v in enumerate(value):
            problems += walk(shape.member, v, f"{path}[{i}]")  # type: ignore[attr-defined]
        return problems
    if t == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map ({shape.name}), got {type(value).__name__}"]
        problems = _range(shape, len(value), path, "size")
        for k, v in value.items():
            problems += walk(shape.key, k, f"{path}<key {k!r}>")  # type: ignore[attr-defined]
            problems += walk(shape.value, v, f"{path}[{k!r}]")  # type: ignore[attr-defined]
        return problems
    if t == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string ({shape.name}), got {type(value).__name__}"]
        problems = _range(shape, len(value), path, "length")
        enum = shape.enum  # type: ignore[attr-defined]
        if enum and value not in enum:
            problems.append(f"{path}: {value!r} is not one of {shape.name}'s {enum}")
        pattern = shape.metadata.get("pattern")
        if pattern and not _pattern_ok(pattern, value):
            problems.append(f"{path}: {value!r} does not match {shape.name}'s {pattern!r}")
        return problems
    if t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected an integer ({shape.name}), got {value!r}"]
        return _range(shape, value, path, "value")
    if t in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [f"{path}: expected a number ({shape.name}), got {value!r}"]
        return _range(shape, value, path, "value")
    if t == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if t == "timestamp":  # AWS JSON 1.1: seconds since the epoch
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [f"{path}: expected a timestamp (seconds), got {value!r}"]
        return []
    if t == "blob":
        return [] if isinstance(value, str) else [f"{path}: expected base64 text, got {value!r}"]
    return [f"{path}: shape type {t!r} of {shape.name} is not checked by this walker"]


def check(operation: OperationModel, status: int, body: bytes) -> None:
    """Fail (AssertionError) unless a response body is its operation's output shape (an
    error: an object with a string ``__type`` and ``message``)."""
    doc = json.loads(body or b"{}")
    if status >= 300:
        assert isinstance(doc, dict) and isinstance(doc.get("__type"), str) \
            and isinstance(doc.get("message"), str), f"{operation.name}: error body {doc!r}"
        listed = {e.name for e in operation.error_shapes} | COMMON_ERRORS
        assert doc["__type"] in listed, \
            f"{operation.name} answered {doc['__type']}, which its model does not list"
        return
    shape = operation.output_shape
    problems = walk(shape, doc) if shape is not None else (
        [] if doc == {} else [f"{operation.name} has no output, got {doc!r}"])
    assert not problems, f"{operation.name} answered outside its shape:\n" + "\n".join(problems)
    WALKED[operation.name] += 1


def watch(client: Any) -> Any:
    """Check every response ``client`` (a boto3 Rekognition client) receives."""
    def before_parse(operation_model: OperationModel, response_dict: dict[str, Any],
                     **_: Any) -> None:
        check(operation_model, int(response_dict["status_code"]), response_dict["body"])

    client.meta.events.register("before-parse.rekognition", before_parse)
    return client
