"""Work on a Ray cluster: bulk indexing's image analysis and stored-video scans as Ray tasks.

The process that asks (the CLI's ``facesearch index --ray``, the service's video jobs) stays
the only writer: Ray tasks decode, detect and embed, and return faces; the caller stores them
through the same store as local work (:class:`facesearch.services.indexing.BulkIndexer`,
:class:`facesearch.media.jobs.VideoJobs`). Tasks run the pipeline the caller's settings
describe (:class:`PipelineSpec`: no secrets travel), loaded once per Ray worker process, on
CPUs or, with ``gpus``, on GPUs. Images travel as bytes (read by the caller) or as S3 objects
that the task reads itself, with the credentials of the worker's environment.

Every node runs the same Python with facesearch installed (docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from facesearch.errors import (
    BackendError,
    FaceSearchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
)
from facesearch.limits import megabytes
from facesearch.types import Faces, Image
from facesearch.video.frames import VideoInfo
from facesearch.video.scan import VideoJobSettings, VideoScan, scan_video
from facesearch.vision.crop import FaceCrop, face_crops
from facesearch.vision.decode import DecodeLimits, load_image
from facesearch.vision.pipeline import Pipeline, pipeline_from

if TYPE_CHECKING:
    from facesearch.config import Settings

log = logging.getLogger("facesearch.cluster")

Analysis = tuple[int, int, Faces, list[FaceCrop]] | str
"""What analysing one image gives: ``(width, height, faces, their review crops)`` or why the
image failed."""


@dataclass(frozen=True)
class PipelineSpec:
    """The pipeline settings (:class:`facesearch.vision.pipeline.PipelineSettings`) and decode
    limits a task needs, and nothing else of the service's settings."""

    pipeline: str
    device: str
    detector_model: str
    min_face: float
    precision: str
    flip: bool
    embedder: str
    threads: int | None
    limits: DecodeLimits

    @classmethod
    def of(cls, settings: Settings, *, threads: int | None = 1,
           device: str | None = None) -> PipelineSpec:
        return cls(settings.pipeline, device or settings.device, settings.detector_model,
                   settings.min_face, settings.precision, settings.flip, settings.embedder,
                   threads, settings.limits)


_pipelines: dict[PipelineSpec, Pipeline] = {}
_pipelines_lock = threading.Lock()


def pipeline_for(spec: PipelineSpec) -> Pipeline:
    """The pipeline of ``spec``, loaded once per process."""
    with _pipelines_lock:
        if spec not in _pipelines:
            _pipelines[spec] = pipeline_from(spec)
        return _pipelines[spec]


# -- sources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Object:
    """An object of an S3-compatible store, read with the reader's environment's credentials
    (``AWS_ACCESS_KEY_ID``... or an instance role)."""

    bucket: str
    key: str
    endpoint_url: str | None = None
    region: str | None = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def parent(self) -> str:
        return PurePosixPath(self.key).parent.name


Source = Path | S3Object
"""An image to index: a local file, or an S3 object."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    if not url.startswith("s3://"):
        raise InvalidParameterError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise InvalidParameterError(f"no bucket in {url!r}")
    return bucket, prefix


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region)


def list_s3(url: str, suffixes: AbstractSet[str], *, endpoint_url: str | None = None,
            region: str | None = None) -> Iterator[S3Object]:
    """Objects under an ``s3://bucket/prefix`` whose names end in one of ``suffixes``, in key
    order."""
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    bucket, prefix = parse_s3_url(url)
    client = _s3_client(endpoint_url, region)
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                     Prefix=prefix):
            for obj in page.get("Contents", []):
                if PurePosixPath(obj["Key"]).suffix.lower() in suffixes:
                    yield S3Object(bucket, obj["Key"], endpoint_url, region)
    except (BotoCoreError, ClientError) as exc:
        raise BackendError(f"cannot list {url}: {exc}") from exc


def read_source(source: bytes | S3Object, limits: DecodeLimits) -> bytes:
    """The bytes of an image (given, or read from S3 within the byte limit)."""
    if not isinstance(source, S3Object):
        return source
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        obj = _s3_client(source.endpoint_url, source.region).get_object(Bucket=source.bucket,
                                                                         Key=source.key)
        data: bytes = obj["Body"].read(limits.max_bytes + 1)
    except (BotoCoreError, ClientError) as exc:
        raise InvalidImageError(f"{source}: cannot be read ({exc})") from None
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"{source}: over the {megabytes(limits.max_bytes)} image "
                                 "limit")
    return data


# -- the analysis, wherever it runs --------------------------------------------------------------

Answer = tuple[str | None, Analysis | None]
"""A task's answer for one image: ``(sha256, analysis)``; sha256 None when the image could not
be read (analysis: why); analysis None when its content was already indexed (skipped)."""


def analyze_sources(pipeline: Pipeline, limits: DecodeLimits, chunk: list[bytes | S3Object],
                    known: AbstractSet[str] = frozenset()) -> list[Answer]:
    """Read, decode and detect each image, then embed all their faces in one batch; content
    whose SHA-256 is in ``known`` is skipped."""
    images: list[Image] = []
    answers: list[Answer | None] = []
    for src in chunk:
        try:
            data = read_source(src, limits)
        except FaceSearchError as exc:
            answers.append((None, exc.message))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            answers.append((sha, None))
            continue
        try:
            images.append(load_image(data, limits))
            answers.append(None)  # filled below
        except FaceSearchError as exc:
            answers.append((sha, exc.message))
    analysed = iter(zip(images, pipeline.analyze_batch(images), strict=True))
    out: list[Answer] = []
    for a in answers:
        if a is None:
            image, faces = next(analysed)
            out.append((image.sha256, (image.width, image.height, faces,
                                         face_crops(image.pixels, faces))))
        else:
            out.append(a)
    return out


def _analyze_task(spec: PipelineSpec, chunk: list[bytes | S3Object],
                  known: AbstractSet[str]) -> list[Answer]:
    """Ray task: :func:`analyze_sources` with the worker process's pipeline."""
    return analyze_sources(pipeline_for(spec), spec.limits, chunk, known)


def _scan_task(spec: PipelineSpec, video: bytes, settings: VideoJobSettings, embed: bool,
               info: VideoInfo | None) -> VideoScan:
    """Ray task: scan a video (its bytes) with the worker process's pipeline."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".video") as f:
        f.write(video)
        f.flush()
        return scan_video(f.name, pipeline_for(spec), settings, embed=embed, info=info)


# -- the cluster ---------------------------------------------------------------------------------


class RayCluster:
    """A connection of this process to a Ray cluster (``address``: its head, ``host:port``).

    Each task asks for ``cpus`` CPUs and ``gpus`` GPUs (with GPUs the pipeline runs on CUDA).
    One per process (Ray's connection is process-wide); :meth:`shutdown` disconnects.
    """

    _active = False

    def __init__(self, address: str, *, gpus: float = 0.0, cpus: float = 1.0) -> None:
        try:
            import ray
        except ImportError as exc:
            raise BackendError("Ray is not installed: pip install 'facesearch[ray]'") from exc
        if RayCluster._active:
            raise BackendError("this process is already connected to a Ray cluster")
        self.address = address
        self.gpus = gpus
        self.cpus = cpus
        self._ray = ray
        node_ip: str | None = None
        host = address.rpartition(":")[0].strip("[]")
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:  # a cluster on this machine's loopback
                node_ip = host
        # ray.init replaces the process's SIGTERM handler with one that exits at once (status
        # 15): keep the caller's (the CLI's unwinds like Ctrl-C: shutdown, checkpoint, 143)
        main = threading.current_thread() is threading.main_thread()
        on_term = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(address=address, namespace="facesearch", log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False,
                     _node_ip_address=node_ip)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
        finally:
            if on_term is not None:
                signal.signal(signal.SIGTERM, on_term)
        RayCluster._active = True
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus,
                                   "scheduling_strategy": "SPREAD"}
        self._analyze = ray.remote(_analyze_task).options(**options)
        self._scan = ray.remote(_scan_task).options(**options)

    def spec(self, settings: Settings) -> PipelineSpec:
        """The pipeline tasks run: ``settings``' own, on CUDA when tasks get GPUs."""
        return PipelineSpec.of(settings, device="cuda" if self.gpus else None)

    @property
    def slots(self) -> int:
        """Tasks the cluster runs at once (its CPUs or GPUs over each task's share)."""
        res = self._ray.cluster_resources()
        if self.gpus:
            return max(1, int(res.get("GPU", 0) // self.gpus))
        return max(1, int(res.get("CPU", 1) // self.cpus))

    def nodes(self) -> list[str]:
        """Addresses of the cluster's live nodes."""
        return [n["NodeManagerAddress"] for n in self._ray.nodes() if n["Alive"]]

    def pool(self, settings: Settings, known: AbstractSet[str] = frozenset()) -> RayPool:
        """A pool of analysis tasks for :class:`~facesearch.services.indexing.BulkIndexer`;
        ``known``: content already indexed (tasks reading S3 objects skip it)."""
        return RayPool(self, self.spec(settings), self._ray.put(frozenset(known)))

    def scan_video(self, path: str | os.PathLike[str], spec: PipelineSpec,
                   settings: VideoJobSettings, *, embed: bool, info: VideoInfo | None,
                   should_stop: Callable[[], bool] | None = None) -> VideoScan | None:
        """Scan a video in a Ray task (its bytes travel with it); None when ``should_stop()``
        turned true first (the task is cancelled)."""
        ref = self._scan.remote(spec, Path(path).read_bytes(), settings, embed, info)
        while True:
            ready, _ = self._ray.wait([ref], timeout=0.5)
            if ready:
                return self._ray.get(ref)  # type: ignore[no-any-return]
            if should_stop is not None and should_stop():
                self._ray.cancel(ref, force=True)
                return None

    def shutdown(self) -> None:
        if RayCluster._active:
            self._ray.shutdown()
            RayCluster._active = False


class RayPool:
    """Analysis of image chunks as Ray tasks (the :class:`AnalysisPool` of bulk indexing)."""

    def __init__(self, cluster: RayCluster, spec: PipelineSpec, known: Any) -> None:
        self.cluster = cluster
        self.spec = spec
        self.known = known
        self.slots = cluster.slots

    def submit(self, chunk: list[bytes | S3Object]) -> Future[list[Answer]]:
        return self.cluster._analyze.remote(  # type: ignore[no-any-return]
            self.spec, chunk, self.known).future()

    def close(self) -> None:
        """Nothing to stop: the cluster's workers stay for the next pool."""

