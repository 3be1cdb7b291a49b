"""Live stream processors as shown: a processor (credentials in its URLs masked), pages of
them, and their metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from facesearch.media.inputs import redact_url
from facesearch.media.stream.model import ProcessorInfo, StreamMetrics
from facesearch.shapes.base import Out, PublicMessage

Status = Annotated[str, BeforeValidator(lambda s: getattr(s, "value", s))]


class StreamProcessorOut(Out):
    name: str
    status: Status
    status_message: PublicMessage
    created_at: float
    updated_at: float
    settings: dict[str, Any] = Field(description="credentials in URLs are masked")
    metrics: StreamMetrics | None = Field(description="null unless running in this server")

    @classmethod
    def of(cls, p: ProcessorInfo, jsonl_root: Path) -> StreamProcessorOut:
        """A processor, its JSONL path relative to ``jsonl_root`` when it lies under it."""
        s = p.settings.model_dump(mode="json")
        s["input_url"] = redact_url(p.settings.input_url)
        s["webhook_url"] = redact_url(p.settings.webhook_url)
        path = p.settings.jsonl_path
        if path is not None and path.is_relative_to(jsonl_root):
            s["jsonl_path"] = str(path.relative_to(jsonl_root))
        return cls(name=p.name, status=p.status, status_message=p.status_message,
                   created_at=p.created_at, updated_at=p.updated_at, settings=s,
                   metrics=p.metrics)


class StreamProcessorsPage(Out):
    processors: list[StreamProcessorOut]
    next_token: str | None = None


class StreamMetricsOut(Out):
    """A processor's metrics, from a :class:`~facesearch.media.stream.model.ProcessorInfo`."""

    name: str
    status: Status
    metrics: StreamMetrics | None
