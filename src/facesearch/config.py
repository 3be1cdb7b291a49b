"""Settings, read from ``FACESEARCH_*`` environment variables (with casts) or given in code."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from facesearch.vision.decode import MAX_BYTES, MAX_PIXELS, MIN_SIDE, DecodeLimits


def default_home() -> Path:
    """``$XDG_DATA_HOME/facesearch`` (``~/.local/share/facesearch``)."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "facesearch"


class Settings(BaseSettings):
    """Service settings. Every field can be set as ``FACESEARCH_<NAME>`` (e.g. FACESEARCH_HOME)."""

    model_config = SettingsConfigDict(env_prefix="FACESEARCH_", extra="forbid")

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
