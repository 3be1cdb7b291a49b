"""boto3 clients for the AWS-compatible endpoints the operator configures: SNS (video jobs'
completion messages, :mod:`facesearch.media.sns`) and Kinesis Data Streams (stream processors'
records, :mod:`facesearch.media.kinesis`).

The endpoint is the operator's (``FACESEARCH_API_SNS_*``, ``FACESEARCH_API_KINESIS_*``), never
a client's: a client only names a topic or a stream on it, which cannot move the connection
elsewhere. So these endpoints are not held to the egress policy that webhooks and stream inputs
(client-chosen hosts) pass, as the S3 store is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facesearch.config import EndpointSettings

CONNECT_TIMEOUT_S = 5
"""Seconds to connect to an endpoint."""
READ_TIMEOUT_S = 10
"""Seconds to wait for an answer."""
MAX_ATTEMPTS = 3
"""Attempts per call, with botocore's standard retry backoff."""


@dataclass(frozen=True)
class AwsEndpoint:
    """An AWS-compatible endpoint: URL, region and credentials (None: boto3's usual chain,
    e.g. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile or an instance role)."""

    url: str
    region: str
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` ("sns", "kinesis") on this endpoint (thread-safe;
        close it)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        return boto3.client(
            service, endpoint_url=self.url, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            config=Config(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                          connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S))


def endpoint_of(settings: EndpointSettings) -> AwsEndpoint | None:
    """The endpoint a settings group configures (None: no ``endpoint_url``, not configured)."""
    if settings.endpoint_url is None:
        return None
    secret = settings.secret_access_key
    return AwsEndpoint(settings.endpoint_url, settings.region, settings.access_key_id,
                       secret.get_secret_value() if secret else None)
