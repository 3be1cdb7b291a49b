"""One :class:`~facesearch.config.Settings`: every ``FACESEARCH_*`` variable keeps its name
(the server's ``FACESEARCH_API_*`` and ``FACESEARCH_API_VIDEO_*`` too, once separate settings
classes), values given in code go over the environment, and unknown names are refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from facesearch.config import ApiSettings, Settings

REPO = Path(__file__).resolve().parents[1]

# Every variable a release before the single Settings read (config.Settings, api.settings.
# ApiSettings, api.video.VideoApiSettings): its name, a value other than the default, the
# field it sets and the value that field then has.
VARIABLES: dict[str, tuple[str, str, Any]] = {
    "FACESEARCH_HOME": ("/srv/fs-home", "home", Path("/srv/fs-home")),
    "FACESEARCH_PIPELINE": ("dlib", "pipeline", "dlib"),
    "FACESEARCH_DEVICE": ("cpu", "device", "cpu"),
    "FACESEARCH_DETECTOR_MODEL": ("short", "detector_model", "short"),
    "FACESEARCH_MIN_FACE": ("12.5", "min_face", 12.5),
    "FACESEARCH_PRECISION": ("int8", "precision", "int8"),
    "FACESEARCH_EMBEDDER": ("dlib-resnet", "embedder", "dlib-resnet"),
    "FACESEARCH_FLIP": ("true", "flip", True),
    "FACESEARCH_THREADS": ("3", "threads", 3),
    "FACESEARCH_MAX_IMAGE_BYTES": ("2048", "max_image_bytes", 2048),
    "FACESEARCH_MAX_IMAGE_PIXELS": ("7000", "max_image_pixels", 7000),
    "FACESEARCH_MIN_IMAGE_SIDE": ("9", "min_image_side", 9),
    "FACESEARCH_ENCRYPTION_KEY": ("a2V5", "encryption_key", "a2V5"),
    "FACESEARCH_ENCRYPTION_KEY_FILE": ("/srv/k", "encryption_key_file", Path("/srv/k")),
    "FACESEARCH_SEARCHES_PER_MINUTE": ("7.5", "searches_per_minute", 7.5),
    "FACESEARCH_KEYS_MASTER_KEY": ("bWFzdGVy", "keys_master_key", "bWFzdGVy"),
    "FACESEARCH_KEYS_MASTER_KEY_FILE": ("/srv/m", "keys_master_key_file", Path("/srv/m")),
    "FACESEARCH_AUDIT_SIGNING_KEY": ("/srv/a.pem", "audit_signing_key", Path("/srv/a.pem")),
    "FACESEARCH_AUDIT_WITNESS": ("/srv/w", "audit_witness", Path("/srv/w")),
    "FACESEARCH_LAW_ENFORCEMENT": ("1", "law_enforcement", True),
    "FACESEARCH_INDEX_LARGE": ("5000", "index_large", 5000),
    "FACESEARCH_VECTOR_BACKEND": ("milvus", "vector_backend", "milvus"),
    "FACESEARCH_MILVUS_URI": ("http://milvus:19530", "milvus_uri", "http://milvus:19530"),
    "FACESEARCH_MILVUS_PREFIX": ("other", "milvus_prefix", "other"),
    "FACESEARCH_MILVUS_TOKEN": ("u:p", "milvus_token", "u:p"),
    "FACESEARCH_MILVUS_ERASURE_BOUND_S": ("60", "milvus_erasure_bound_s", 60),
    "FACESEARCH_RAY_ADDRESS": ("head:6379", "ray_address", "head:6379"),
    "FACESEARCH_RAY_GPUS": ("0.5", "ray_gpus", 0.5),
    "FACESEARCH_VIDEO_WORKERS": ("3", "video_workers", 3),
    "FACESEARCH_VIDEO_WAITING_PER_KEY": ("4", "video_waiting_per_key", 4),
    "FACESEARCH_VIDEO_PARKED_BYTES_PER_KEY": ("4096", "video_parked_bytes_per_key", 4096),
    "FACESEARCH_MAX_VIDEO_BYTES": ("8192", "max_video_bytes", 8192),
    "FACESEARCH_REPORT_PURPOSES": ("a,b", "report_purposes", "a,b"),
    "FACESEARCH_REPORT_MIN_COUNT": ("3", "report_min_count", 3),
    "FACESEARCH_EGRESS_ALLOW": ("10.0.0.0/8", "egress_allow", "10.0.0.0/8"),
    "FACESEARCH_DATABASE_URL": ("postgresql://db/m", "database_url", "postgresql://db/m"),
    "FACESEARCH_AUDIT_DATABASE_URL": ("postgresql://db/a", "audit_database_url",
                                      "postgresql://db/a"),
    "FACESEARCH_API_HOST": ("0.0.0.0", "api.host", "0.0.0.0"),
    "FACESEARCH_API_PORT": ("0", "api.port", 0),
    "FACESEARCH_API_WORKERS": ("4", "api.workers", 4),
    "FACESEARCH_API_QUEUE": ("5", "api.queue", 5),
    "FACESEARCH_API_RETRY_AFTER_S": ("2", "api.retry_after_s", 2),
    "FACESEARCH_API_MAX_CONNECTIONS": ("9", "api.max_connections", 9),
    "FACESEARCH_API_MAX_BODY_BYTES": ("4096", "api.max_body_bytes", 4096),
    "FACESEARCH_API_CLOCK_SKEW_S": ("60", "api.clock_skew_s", 60.0),
    "FACESEARCH_API_AUTH_FAILURES_PER_MINUTE": ("5", "api.auth_failures_per_minute", 5),
    "FACESEARCH_API_REGION": ("eu-west-1", "api.region", "eu-west-1"),
    "FACESEARCH_API_ACCOUNT_ID": ("123456789012", "api.account_id", "123456789012"),
    "FACESEARCH_API_S3_ENDPOINT_URL": ("http://s3:9000", "api.s3.endpoint_url",
                                       "http://s3:9000"),
    "FACESEARCH_API_S3_REGION": ("eu-west-2", "api.s3.region", "eu-west-2"),
    "FACESEARCH_API_S3_ACCESS_KEY_ID": ("s3id", "api.s3.access_key_id", "s3id"),
    "FACESEARCH_API_S3_SECRET_ACCESS_KEY": ("s3secret", "api.s3.secret_access_key",
                                            "s3secret"),
    "FACESEARCH_API_SNS_ENDPOINT_URL": ("http://sns:4566", "api.sns.endpoint_url",
                                        "http://sns:4566"),
    "FACESEARCH_API_SNS_REGION": ("eu-west-3", "api.sns.region", "eu-west-3"),
    "FACESEARCH_API_SNS_ACCESS_KEY_ID": ("snsid", "api.sns.access_key_id", "snsid"),
    "FACESEARCH_API_SNS_SECRET_ACCESS_KEY": ("snssecret", "api.sns.secret_access_key",
                                             "snssecret"),
    "FACESEARCH_API_KINESIS_ENDPOINT_URL": ("http://kinesis:4567", "api.kinesis.endpoint_url",
                                            "http://kinesis:4567"),
    "FACESEARCH_API_KINESIS_REGION": ("eu-north-1", "api.kinesis.region", "eu-north-1"),
    "FACESEARCH_API_KINESIS_ACCESS_KEY_ID": ("kid", "api.kinesis.access_key_id", "kid"),
    "FACESEARCH_API_KINESIS_SECRET_ACCESS_KEY": ("ksecret", "api.kinesis.secret_access_key",
                                                 "ksecret"),
    "FACESEARCH_API_REKOGNITION_IMAGE_FORMATS": ('["jpeg","webp"]',
                                                 "api.rekognition_image_formats",
                                                 ["jpeg", "webp"]),
    "FACESEARCH_API_LOG_LEVEL": ("debug", "api.log_level", "debug"),
    "FACESEARCH_API_RETENTION_INTERVAL_S": ("0", "api.retention_interval_s", 0.0),
    "FACESEARCH_API_VIDEO_PATH_ROOTS": ("/srv/videos", "api.video.path_roots", "/srv/videos"),
    "FACESEARCH_API_VIDEO_MAX_UPLOAD_BYTES": ("2048", "api.video.max_upload_bytes", 2048),
    "FACESEARCH_API_VIDEO_ALLOW_DEVICES": ("true", "api.video.allow_devices", True),
}

NOT_SETTINGS = {"FACESEARCH_CACHE", "FACESEARCH_TEST_MILVUS"}
"""Documented variables read elsewhere: the model cache's folder, the Milvus tests' switch."""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FACESEARCH_* variable of the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("FACESEARCH_"):
            monkeypatch.delenv(name)


def value_at(settings: Settings, path: str) -> Any:
    """The value of the field at the dotted ``path`` (a secret's value unwrapped)."""
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_each_variable_sets_its_field(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    raw, path, expected = VARIABLES[name]
    assert value_at(Settings(), path) != expected  # the default is something else
    monkeypatch.setenv(name, raw)
    assert value_at(Settings(), path) == expected
    monkeypatch.setenv(name.lower(), raw)  # names are not case-sensitive
    monkeypatch.delenv(name)
    assert value_at(Settings(), path) == expected


def _leaf_names(model: type[BaseModel], prefix: str = "FACESEARCH_") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out |= _leaf_names(kind, f"{prefix}{name.upper()}_")
        else:
            out.add(f"{prefix}{name.upper()}")
    return out


def test_every_field_has_a_listed_variable() -> None:
    """No field was renamed or added without its variable in the list above."""
    assert _leaf_names(Settings) == set(VARIABLES)


def test_every_documented_variable_is_a_setting() -> None:
    """Each FACESEARCH_* name the README and docs/ give sets a field (or is one of the few
    read elsewhere)."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    whole = re.compile(r"FACESEARCH_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*])")  # not FACESEARCH_API_*
    named = {m for p in docs for m in whole.findall(p.read_text())}
    unknown = named - set(VARIABLES) - NOT_SETTINGS
    assert unknown == set(), f"documented but not settings: {sorted(unknown)}"
    assert {"FACESEARCH_API_VIDEO_PATH_ROOTS", "FACESEARCH_API_SNS_ENDPOINT_URL",
            "FACESEARCH_HOME"} <= named


def test_code_goes_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACESEARCH_HOME", "/srv/elsewhere")
    monkeypatch.setenv("FACESEARCH_API_PORT", "9000")
    monkeypatch.setenv("FACESEARCH_API_HOST", "0.0.0.0")
    monkeypatch.setenv("FACESEARCH_API_SNS_REGION", "eu-west-3")
    s = Settings(home=tmp_path, audit_signing_key=tmp_path / "k.pem")
    assert (s.home, s.audit_signing_key) == (tmp_path, tmp_path / "k.pem")
    assert (s.api.port, s.api.host) == (9000, "0.0.0.0")
    # A group as a dict: its fields given over the environment, the others still from it.
    s = Settings(api={"port": 0, "sns": {"endpoint_url": "http://sns"}})
    assert (s.api.port, s.api.host) == (0, "0.0.0.0")
    assert (s.api.sns.endpoint_url, s.api.sns.region) == ("http://sns", "eu-west-3")
    # A whole group object: that group as given.
    s = Settings(api=ApiSettings(port=1))
    assert (s.api.port, s.api.host, s.api.sns.region) == (1, "127.0.0.1", "us-east-1")


def test_unknown_and_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="no_such"):
        Settings(no_such=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="no_such"):
        Settings(api={"video": {"no_such": 1}})
    monkeypatch.setenv("FACESEARCH_API_VIDEO_MAX_UPLOAD_BYTES", "12")
    with pytest.raises(ValidationError, match=r"api\.video\.max_upload_bytes"):
        Settings()
    monkeypatch.setenv("FACESEARCH_API_VIDEO_MAX_UPLOAD_BYTES", "2048")
    monkeypatch.setenv("FACESEARCH_API_REKOGNITION_IMAGE_FORMATS", '["exe"]')
    with pytest.raises(ValidationError, match="rekognition_image_formats"):
        Settings()


def test_video_roots_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    (tmp_path / "a").mkdir()
    (tmp_path / "b").symlink_to(tmp_path / "a")
    monkeypatch.setenv("FACESEARCH_API_VIDEO_PATH_ROOTS",
                       os.pathsep.join([str(tmp_path / "b"), " ", str(tmp_path / "c" / "..")]))
    assert Settings().api.video.roots() == [(tmp_path / "a").resolve(), tmp_path.resolve()]
    assert Settings(api={"video": {"path_roots": ""}}).api.video.roots() == []
