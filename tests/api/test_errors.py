"""The error mapping: every error class has a status and a Rekognition code botocore knows."""

from __future__ import annotations

import botocore.loaders

from facesearch import errors
from facesearch.api import errors as api_errors
from facesearch.api.errors import ERRORS, aws_code, mapping
from facesearch.governance.keys import KeyNotFoundError

# AWS-wide errors of the JSON protocol, not listed in Rekognition's model.
COMMON = {"MissingAuthenticationTokenException", "IncompleteSignatureException",
          "UnrecognizedClientException", "InvalidSignatureException", "UnknownOperationException",
          "SerializationException"}


def _classes(module: object) -> list[type[errors.FaceSearchError]]:
    return [v for v in vars(module).values() if isinstance(v, type)
            and issubclass(v, errors.FaceSearchError)]


def test_every_error_maps_to_a_known_code() -> None:
    model = botocore.loaders.Loader().load_service_model("rekognition", "service-2")
    known = {n for n, s in model["shapes"].items() if s.get("exception")} | COMMON
    for cls in {*_classes(errors), *_classes(api_errors), KeyNotFoundError}:
        exc = cls("x") if cls is not errors.ThrottledError else cls("x", 1)
        m = mapping(exc)
        assert 400 <= m.status < 600 and m.aws_code in known, cls
    assert {m.aws_code for m in ERRORS.values()} <= known


def test_specific_mappings() -> None:
    assert mapping(errors.CollectionNotFoundError("x")).status == 404
    assert mapping(errors.ImageTooLargeError("x")).aws_code == "ImageTooLargeException"
    assert mapping(errors.InvalidImageError("x")).aws_code == "InvalidImageFormatException"
    assert mapping(api_errors.QueueFullError("x")).status == 503
    assert aws_code(errors.AlreadyExistsError("x"), "CreateCollection") == \
        "ResourceAlreadyExistsException"
    assert aws_code(errors.AlreadyExistsError("x"), "CreateUser") == "ConflictException"
