"""Telling a video job's submitter that it ended: a POST to its webhook (shaped like
Rekognition's SNS message) and/or Rekognition's completion message published to its SNS topic
(:mod:`facesearch.media.sns`; a topic is refused when no SNS endpoint is configured, never
accepted and dropped). How that went is recorded on the job (``notification``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from facesearch.errors import InvalidParameterError
from facesearch.media.job_table import JobTable
from facesearch.media.sns import SnsPublisher, check_topic_arn, completion_message
from facesearch.media.video_job import TERMINAL, JobKind, JobStatus, job_from_row
from facesearch.media.webhook import OPEN, EgressPolicy, post_json

log = logging.getLogger(__name__)


def s3_label(bucket: str, name: str, version: str | None = None) -> str:
    """How a job names its S3 input (its ``source``); :func:`parse_s3_label` reads it back."""
    return f"s3://{bucket}/{name}" + (f"?versionId={version}" if version else "")


def parse_s3_label(source: str) -> tuple[str, str, str | None] | None:
    """``(bucket, name, version)`` of a source written by :func:`s3_label`, else None."""
    if not source.startswith("s3://"):
        return None
    bucket, _, rest = source[len("s3://"):].partition("/")
    name, _, version = rest.rpartition("?versionId=") if "?versionId=" in rest else (rest, "", "")
    return (bucket, name, version or None) if bucket and name else None


class JobNotifier:
    """Sends the end-of-job notifications of the jobs of ``table``. Webhooks are held to
    ``egress``; ``sns`` publishes to SNS topics (None: jobs that name a topic are refused);
    ``stop`` cuts a webhook's retries short at shutdown."""

    def __init__(self, table: JobTable, *, egress: EgressPolicy = OPEN,
                 sns: SnsPublisher | None = None,
                 stop: threading.Event | None = None) -> None:
        self.table = table
        self.egress = egress
        self.sns = sns
        self.stop = stop or threading.Event()

    def check_sns(self, topic_arn: str | None) -> None:
        """Refuse (:class:`InvalidParameterError`) an SNS topic this service cannot publish
        to: a malformed ARN, or no SNS endpoint configured (a topic is never accepted and
        then dropped)."""
        if topic_arn is None:
            return
        check_topic_arn(topic_arn)
        if self.sns is None:
            raise InvalidParameterError(
                "NotificationChannel: this server has no SNS endpoint configured "
                "(FACESEARCH_API_SNS_ENDPOINT_URL), so it cannot publish the completion "
                "message; poll GetFaceSearch / GetFaceDetection instead")

    def notify(self, job_id: str) -> None:
        """Tell the job's webhook and SNS topic that it ended; record how that went."""
        job = job_from_row(self.table.row(job_id))
        if job.status not in TERMINAL or (job.webhook_url is None and job.sns_topic_arn is None):
            return
        api = ("StartFaceSearch" if job.kind is JobKind.FACE_SEARCH else "StartFaceDetection")
        finished_ms = int((job.finished_at or self.table.clock()) * 1000)
        outcomes: list[tuple[str, str | None]] = []
        if job.webhook_url is not None:
            payload: dict[str, object] = {
                "JobId": job.job_id, "Status": job.status.value, "API": api,
                "JobTag": job.job_tag, "Timestamp": finished_ms,
                "StatusMessage": job.status_message, "Video": {"Source": job.source},
            }
            outcomes.append(("webhook", post_json(job.webhook_url, payload, stop=self.stop,
                                                  egress=self.egress)))
        if job.sns_topic_arn is not None:
            # Rekognition's message: a cancelled job is FAILED; the S3 object the job read.
            status = "SUCCEEDED" if job.status is JobStatus.SUCCEEDED else "FAILED"
            s3 = parse_s3_label(job.source)
            message = completion_message(job.job_id, status, api, job.job_tag, finished_ms,
                                         s3[0] if s3 else None,
                                         s3[1] if s3 else Path(job.source).name or None)
            outcomes.append(("sns", self.sns.publish(job.sns_topic_arn, message)
                             if self.sns is not None
                             else "no SNS endpoint is configured in this process"))
        texts = ["delivered" if reason is None else f"failed: {reason}" for _, reason in outcomes]
        notification = texts[0] if len(texts) == 1 else "; ".join(
            f"{what}: {text}" for (what, _), text in zip(outcomes, texts, strict=True))
        self.table.set_notification(job_id, notification)
        for what, reason in outcomes:
            if reason is not None:
                log.warning("video job %s: %s failed: %s", job_id, what, reason)
