"""HTTP server settings, read from ``FACESEARCH_API_*`` environment variables (with casts)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from facesearch.media.aws import AwsEndpoint


class ApiSettings(BaseSettings):
    """Server settings. Every field can be set as ``FACESEARCH_API_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FACESEARCH_API_", extra="forbid")

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
    s3_endpoint_url: str | None = Field(None, description="S3-compatible store for "
                                                          "Image.S3Object (unset: refused)")
    s3_region: str = Field("us-east-1", description="region of that store")
    s3_access_key_id: str | None = Field(None, description="credentials for that store "
                                                           "(unset: boto3's usual chain)")
    s3_secret_access_key: SecretStr | None = None
    sns_endpoint_url: str | None = Field(
        None, description="SNS-compatible endpoint that video jobs' completion messages are "
                          "published to (Rekognition's NotificationChannel; unset: refused)")
    sns_region: str = Field("us-east-1", description="region of that endpoint")
    sns_access_key_id: str | None = Field(None, description="credentials for it (unset: "
                                                            "boto3's usual chain)")
    sns_secret_access_key: SecretStr | None = None
    kinesis_endpoint_url: str | None = Field(
        None, description="Kinesis Data Streams endpoint that stream processors write their "
                          "records to (Rekognition's Output.KinesisDataStream; unset: refused)")
    kinesis_region: str = Field("us-east-1", description="region of that endpoint")
    kinesis_access_key_id: str | None = Field(None, description="credentials for it (unset: "
                                                                "boto3's usual chain)")
    kinesis_secret_access_key: SecretStr | None = None
    rekognition_image_formats: list[Literal["jpeg", "png", "webp", "bmp", "tiff", "gif"]] = Field(
        ["jpeg", "png"], description="image formats the Rekognition endpoint accepts (AWS: JPEG "
                                     "and PNG; others InvalidImageFormatException); a JSON list, "
                                     "e.g. '[\"jpeg\",\"png\",\"webp\"]'; the native API "
                                     "reads every format")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")
    retention_interval_s: float = Field(3600.0, ge=0, description="how often expired faces "
                                                                  "are erased (0: never)")

    def sns(self) -> AwsEndpoint | None:
        """The SNS endpoint (None: not configured)."""
        return _endpoint(self.sns_endpoint_url, self.sns_region, self.sns_access_key_id,
                         self.sns_secret_access_key)

    def kinesis(self) -> AwsEndpoint | None:
        """The Kinesis Data Streams endpoint (None: not configured)."""
        return _endpoint(self.kinesis_endpoint_url, self.kinesis_region,
                         self.kinesis_access_key_id, self.kinesis_secret_access_key)

    def body_limit(self, max_image_bytes: int) -> int:
        """Largest request body in bytes: the setting, else two base64 images plus 64 KiB."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 2 * (4 * (max_image_bytes + 2) // 3) + 64 * 1024


def _endpoint(url: str | None, region: str, key_id: str | None,
              secret: SecretStr | None) -> AwsEndpoint | None:
    if url is None:
        return None
    return AwsEndpoint(url, region, key_id, secret.get_secret_value() if secret else None)
