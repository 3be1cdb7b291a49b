"""Settings, read from ``FACESEARCH_*`` environment variables (with casts) or given in code.

One :class:`Settings` holds them all. Its plain fields are ``FACESEARCH_<NAME>``; its groups
(:class:`ApiSettings` and the groups inside it) add their name to the prefix: the field
``api.sns.endpoint_url`` is ``FACESEARCH_API_SNS_ENDPOINT_URL``, ``api.video.path_roots``
``FACESEARCH_API_VIDEO_PATH_ROOTS``. In code, give a group as a dict of the fields to set
(``Settings(api={"port": 0})``: the environment still sets the others) or as a whole group
object (``Settings(api=ApiSettings(port=0))``: the environment is not read for that group).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from facesearch.vision.decode import MAX_BYTES, MAX_PIXELS, MIN_SIDE, DecodeLimits

ENV_PREFIX = "FACESEARCH_"


def default_home() -> Path:
    """``$XDG_DATA_HOME/facesearch`` (``~/.local/share/facesearch``)."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "facesearch"


class EndpointSettings(BaseModel):
    """An AWS-compatible endpoint the operator configures (``FACESEARCH_API_<GROUP>_*``: S3,
    SNS, Kinesis). Without ``endpoint_url`` the feature that needs it is refused."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(None, description="the endpoint's URL (unset: refused)")
    region: str = Field("us-east-1", description="region of that endpoint")
    access_key_id: str | None = Field(None, description="credentials for it (unset: boto3's "
                                                        "usual chain)")
    secret_access_key: SecretStr | None = None


class VideoApiSettings(BaseModel):
    """Video settings of the HTTP server (``FACESEARCH_API_VIDEO_<NAME>``)."""

    model_config = ConfigDict(extra="forbid")

    path_roots: str = Field(
        default="",
        description=f"directories (separated by {os.pathsep!r}) under which server paths may be "
                    "named as video input or as a stream processor's file input; empty: server "
                    "paths are refused")
    max_upload_bytes: int = Field(default=256 * 1024**2, ge=1024,
                                  description="largest video upload (request body), in bytes")
    allow_devices: bool = Field(default=False,
                                description="whether stream processors may open local V4L2 "
                                            "cameras (/dev/videoN)")

    def roots(self) -> list[Path]:
        """The directories of ``path_roots``, resolved."""
        return [Path(p).resolve() for p in self.path_roots.split(os.pathsep) if p.strip()]


class ApiSettings(BaseModel):
    """HTTP server settings (``FACESEARCH_API_<NAME>``), with the endpoints it and its video
    jobs and stream processors use (``s3``: ``Image.S3Object`` and videos; ``sns``: video
    jobs' NotificationChannel; ``kinesis``: stream processors' Output.KinesisDataStream) and
    its video settings (``video``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    workers: int = Field(2, ge=1, le=256, description="inference worker threads (each with its "
                                                      "own face pipeline)")
    queue: int = Field(16, ge=0, le=100_000, description="requests that may wait for a worker; "
                                                         "beyond that: 503 / ThrottlingException")
    retry_after_s: int = Field(1, ge=1, description="Retry-After (seconds) on a full queue")
    max_connections: int = Field(128, ge=1, description="concurrent connections (uvicorn's "
                                                        "limit_concurrency); beyond that: 503")
    max_body_bytes: int | None = Field(None, ge=1024, description="largest request body (default: "
                                                                  "room for two images at the "
                                                                  "image byte limit, base64)")
    clock_skew_s: float = Field(300.0, ge=1, description="largest SigV4 clock skew accepted (s)")
    auth_failures_per_minute: int = Field(
        20, ge=0, description="failed authentications a source address may make in a minute; "
                              "beyond that its requests get 429 until the minute passes (0: "
                              "no limit)")
    region: str = Field("us-east-1", description="region named in collection ARNs")
    account_id: str = Field("000000000000", pattern=r"^[0-9]{12}$",
                            description="account id named in collection ARNs")
    rekognition_image_formats: list[Literal["jpeg", "png", "webp", "bmp", "tiff", "gif"]] = Field(
        ["jpeg", "png"], description="image formats the Rekognition endpoint accepts (AWS: JPEG "
                                     "and PNG; others InvalidImageFormatException); a JSON list, "
                                     "e.g. '[\"jpeg\",\"png\",\"webp\"]'; the native API "
                                     "reads every format")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")
    retention_interval_s: float = Field(3600.0, ge=0, description="how often expired faces "
                                                                  "are erased (0: never)")
    s3: EndpointSettings = Field(
        default_factory=EndpointSettings,
        description="S3-compatible store for Image.S3Object and videos (unset: refused)")
    sns: EndpointSettings = Field(
        default_factory=EndpointSettings,
        description="SNS-compatible endpoint that video jobs' completion messages are "
                    "published to (Rekognition's NotificationChannel; unset: refused)")
    kinesis: EndpointSettings = Field(
        default_factory=EndpointSettings,
        description="Kinesis Data Streams endpoint that stream processors write their "
                    "records to (Rekognition's Output.KinesisDataStream; unset: refused)")
    video: VideoApiSettings = Field(default_factory=VideoApiSettings)

    def body_limit(self, max_image_bytes: int) -> int:
        """Largest request body in bytes: the setting, else two base64 images plus 64 KiB."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 2 * (4 * (max_image_bytes + 2) // 3) + 64 * 1024


class Settings(BaseSettings):
    """All settings. Every field can be set as ``FACESEARCH_<NAME>`` (e.g. FACESEARCH_HOME),
    every field of a group as ``FACESEARCH_<GROUP>_<NAME>`` (e.g. FACESEARCH_API_PORT,
    FACESEARCH_API_SNS_ENDPOINT_URL)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    home: Path = Field(default_factory=default_home, description="data directory")
    pipeline: str = Field("fast", pattern="^(fast|dlib)$",
                          description="face pipeline: fast (ONNX) or dlib")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="inference device")
    detector_model: str = Field(
        "auto", pattern="^(auto|short|full)$",
        description="fast pipeline's BlazeFace models: auto (both), short (large faces: "
                    "portraits and booking photos, fastest) or full")
    min_face: float = Field(
        24.0, ge=0, le=10_000,
        description="smallest face to find in stills, as its inter-ocular distance in pixels "
                    "(faces smaller than BlazeFace sees on a large image are found by a YuNet "
                    "pass; 0: BlazeFace only, fastest)")
    precision: str = Field("fp32", pattern="^(fp32|int8)$",
                           description="fast pipeline's embedder: fp32, or int8 (faster on "
                                       "CPUs with VNNI; other vectors: a new model version)")
    embedder: str = Field("sface", pattern="^(sface|dlib-resnet)$",
                          description="fast pipeline's embedder: sface (default) or "
                                      "dlib-resnet (dlib's ResNet; collections made with it "
                                      "keep it until `collection reembed`)")
    flip: bool = Field(False, description="fast pipeline: also embed each face's mirror image "
                                          "and average (2x embedder cost; a new model version)")
    threads: int | None = Field(None, ge=1, description="inference threads per process")
    max_image_bytes: int = Field(MAX_BYTES, ge=1024)
    max_image_pixels: int = Field(MAX_PIXELS, ge=6400)
    min_image_side: int = Field(MIN_SIDE, ge=1)
    encryption_key: SecretStr | None = Field(
        None, description="base64 AES-256 key: encrypt face vectors and index files at rest")
    encryption_key_file: Path | None = Field(None, description="file holding that key")
    searches_per_minute: float = Field(600.0, ge=0, description="per-caller 1:N search rate "
                                                                 "limit (0: none)")
    keys_master_key: SecretStr | None = Field(
        None, description="base64 of 32 bytes: seals access-key secrets (default: a key file "
                          "in the data directory, mode 0600)")
    keys_master_key_file: Path | None = Field(
        None, description="file holding that master key (base64), kept outside the data "
                          "directory; created (0600) when missing")
    audit_signing_key: Path | None = Field(
        None, description="Ed25519 PEM that signs audit checkpoints, outside the data "
                          "directory (created 0600 when missing; default: in the data "
                          "directory, with a warning; required for law enforcement)")
    audit_witness: Path | None = Field(
        None, description="append-only file outside the data directory that every audit "
                          "checkpoint is also written to (audit verify --witness)")
    law_enforcement: bool = Field(
        False, description="a law-enforcement deployment: refuse to start without an "
                           "audit signing key outside the data directory (also implied by "
                           "any law-enforcement collection)")
    index_large: int = Field(
        100_000, ge=1_000, description="collection size (faces) from which its vector index is "
                                       "an inverted file with re-ranking instead of exact")
    vector_backend: str = Field(
        "faiss", pattern="^(faiss|milvus)$",
        description="where collections' vectors are searched: faiss (an index per collection "
                    "in the data directory) or milvus (a Milvus server or cluster; needs the "
                    "Milvus environment, scripts/setup-milvus)")
    milvus_uri: str = Field("http://127.0.0.1:19530",
                            description="Milvus server or cluster proxy (vector_backend milvus)")
    milvus_prefix: str = Field(
        "facesearch", pattern="^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="prefix of this deployment's Milvus collections (one per database)")
    milvus_token: SecretStr | None = Field(
        None, description="Milvus credentials, 'user:password' or an API key")
    milvus_erasure_bound_s: int = Field(
        840, ge=1, description="seconds within which the Milvus server's settings remove an "
                               "erased vector from its files (docs/deploy.md's settings: 840); "
                               "stated on erasure receipts")
    ray_address: str | None = Field(
        None, description="Ray cluster (host:port of its head) that runs stored-video scans "
                          "(and `facesearch index --ray` by default); none: in this process")
    ray_gpus: float = Field(0.0, ge=0, description="GPUs each Ray task asks for (0: CPU)")
    video_workers: int = Field(1, ge=1, description="stored-video jobs run at once")
    video_waiting_per_key: int = Field(
        10, ge=1, description="video jobs one caller may have waiting to start (the server "
                              "holds 100 in all); beyond that: 429")
    video_parked_bytes_per_key: int = Field(
        1024**3, ge=1024, description="bytes of uploaded video one caller's waiting jobs may "
                                      "hold on disk; beyond that: 429")
    max_video_bytes: int = Field(10 * 1024**3, ge=1024, description="largest video accepted "
                                                                    "(bytes)")
    report_purposes: str = Field(
        "", description="comma-separated purposes the transparency report may name (an "
                        "operator-defined list); any other stated purpose is free text and is "
                        "counted under one 'not on the published list' row")
    report_min_count: int = Field(
        5, ge=1, description="the transparency report's smallest published count in a "
                             "breakdown by purpose or collection: smaller groups are combined, "
                             "or left out when even combined they are smaller")
    egress_allow: str = Field(
        "", description="comma-separated CIDR networks, addresses or host names that webhooks "
                        "and stream inputs may reach although they are loopback, link-local or "
                        "private (default: none; public addresses only)")

    database_url: SecretStr | None = Field(
        None, description="metadata database (collections, faces, users, keys, jobs, streams) "
                          "as a SQLAlchemy URL, e.g. postgresql://facesearch@db/facesearch, "
                          "shared by several API nodes (default: facesearch.db in the data "
                          "directory)")
    audit_database_url: SecretStr | None = Field(
        None, description="audit trail database URL; may be the metadata database (default: "
                          "audit.db in the data directory)")

    api: ApiSettings = Field(default_factory=ApiSettings,
                             description="the HTTP server (FACESEARCH_API_*)")

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values given in code, then the environment: plain fields, then groups' fields."""
        return (init_settings, env_settings, GroupEnvSource(settings_cls), dotenv_settings,
                file_secret_settings)

    def metadata_target(self) -> Path | str:
        """The metadata database: its URL, or the SQLite file in the data directory."""
        url = self.database_url
        return url.get_secret_value() if url else self.home / "facesearch.db"

    def audit_target(self) -> Path | str:
        """The audit trail's database: its URL, or the SQLite file in the data directory."""
        url = self.audit_database_url
        return url.get_secret_value() if url else self.home / "audit.db"

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_image_bytes, self.max_image_pixels, self.min_image_side)


class GroupEnvSource(PydanticBaseSettingsSource):
    """The environment variables of the settings' groups: ``FACESEARCH_<GROUP>_<NAME>`` for
    each field of a group, and so on for the groups inside it (cast as pydantic-settings
    casts plain fields: JSON for lists)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        return _group_values(self.settings_cls, ENV_PREFIX)


def _group(field: FieldInfo) -> type[BaseModel] | None:
    """The group model a field holds (None: a plain field)."""
    kind = field.annotation
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _group_values(model: type[BaseModel], prefix: str) -> dict[str, Any]:
    """``{group: {field: value}}`` from the environment for the groups of ``model`` whose
    variables start with ``prefix``; groups without any are left out."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        group = _group(field)
        if group is None:
            continue
        inner = f"{prefix}{name.upper()}_"
        read = EnvSettingsSource(group, env_prefix=inner)()  # type: ignore[arg-type]
        values = {k: v for k, v in read.items() if _group(group.model_fields[k]) is None}
        values.update(_group_values(group, inner))
        if values:
            out[name] = values
    return out
