"""Completion messages of stored-video jobs to Amazon SNS (or a compatible endpoint), for
Rekognition clients that pass ``NotificationChannel`` (the StartFaceSearch -> SNS -> SQS
pattern).

The message is Rekognition Video's (:func:`completion_message`); it is published once, when the
job ends, through boto3 at the endpoint the operator configures
(:class:`~facesearch.media.aws.AwsEndpoint`). A failure is returned (and logged), never raised:
the job records it (``notification``) as it records a webhook's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from facesearch.errors import InvalidParameterError
from facesearch.media.aws import AwsEndpoint

log = logging.getLogger(__name__)

TOPIC_ARN = re.compile(r"^arn:aws:sns:[^:]*:\w{12}:.+$")
"""Rekognition's pattern of ``NotificationChannel.SNSTopicArn``."""
ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
"""Rekognition's pattern of ``NotificationChannel.RoleArn`` (accepted, not assumed)."""

PUBLISH_FAILED = "the SNS message could not be published (see the server log)"
"""The one failure reason a client sees, whatever went wrong."""


def check_topic_arn(arn: str) -> str:
    """``arn`` if it is an SNS topic ARN, else :class:`InvalidParameterError`."""
    if not TOPIC_ARN.match(arn):
        raise InvalidParameterError(f"invalid SNS topic ARN {arn!r}")
    return arn


def completion_message(job_id: str, status: str, api: str, job_tag: str | None,
                       finished_ms: int, bucket: str | None, name: str | None) -> dict[str, Any]:
    """Rekognition Video's completion message: ``JobId``, ``Status`` (SUCCEEDED or FAILED),
    ``API`` (the Start operation), ``JobTag``, ``Timestamp`` (ms since the epoch) and ``Video``
    (``S3ObjectName``, ``S3Bucket``)."""
    video: dict[str, Any] = {}
    if name is not None:
        video["S3ObjectName"] = name
    if bucket is not None:
        video["S3Bucket"] = bucket
    out: dict[str, Any] = {"JobId": job_id, "Status": status, "API": api,
                           "Timestamp": finished_ms, "Video": video}
    if job_tag is not None:
        out["JobTag"] = job_tag
    return out


class SnsPublisher:
    """Publishes to topics of one SNS endpoint (blocking calls, thread-safe)."""

    def __init__(self, endpoint: AwsEndpoint) -> None:
        self.endpoint = endpoint
        self._client: Any = endpoint.client("sns")

    def publish(self, topic_arn: str, message: Mapping[str, Any]) -> str | None:
        """Publish ``message`` (as JSON) to ``topic_arn``: None when SNS took it, else
        :data:`PUBLISH_FAILED` (the actual reason is logged)."""
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )

        client = self._client
        if client is None:
            log.warning("SNS publish to %s after shutdown", topic_arn)
            return PUBLISH_FAILED
        try:
            client.publish(TopicArn=topic_arn, Message=json.dumps(message))
        except ClientError as exc:
            log.warning("SNS publish to %s failed: %s", topic_arn,
                        exc.response.get("Error", {}).get("Code", exc))
            return PUBLISH_FAILED
        except BotoCoreError as exc:
            log.warning("SNS publish to %s failed: %s", topic_arn, exc)
            return PUBLISH_FAILED
        return None

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
