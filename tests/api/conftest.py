"""Shared fixtures of the HTTP API tests: a real server process on loopback (started with
``python -m facesearch serve``), access keys for every role, boto3 and httpx clients (every
Rekognition response walked against botocore's model, :mod:`.shapes`), and AWS-compatible
services (moto in server mode): S3 for ``Image.S3Object`` and videos, SNS and SQS for video
jobs' ``NotificationChannel``, Kinesis for stream processors' output."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from facesearch.config import Settings
from facesearch.service import FaceSearch

from ..clirun import CliResult, run_cli
from ..conftest import face
from .shapes import watch

ROLES = ("admin", "indexer", "searcher", "auditor")
S3_BUCKET = "probes"
S3_CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
AWS_REGION = "us-east-1"
TINY_VIDEO_KEY = "videos/tiny.mp4"
"""A 2 s video of obama.jpg in the S3 store (:func:`tiny_video`)."""


def aws_env(moto_url: str) -> dict[str, str]:
    """A server's SNS and Kinesis endpoints (moto), with credentials from the usual AWS
    environment variables (as a deployment on AWS would have them)."""
    return {"FACESEARCH_API_SNS_ENDPOINT_URL": moto_url,
            "FACESEARCH_API_KINESIS_ENDPOINT_URL": moto_url, **S3_CREDS}


def aws(moto_url: str, service: str) -> Any:
    """A boto3 client of ``service`` (s3, sns, sqs, kinesis) on the moto server."""
    import boto3

    return boto3.client(service, endpoint_url=moto_url, region_name=AWS_REGION,
                        aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"])


def make_video(path: Path, photo: str = "obama.jpg", frames: int = 10, fps: int = 5) -> Path:
    """A short MPEG-4 video showing ``photo`` (320 px wide) in every frame."""
    import av
    import numpy as np

    img = PILImage.open(face(photo)).convert("RGB")
    w = 320
    h = round(img.height * w / img.width / 2) * 2
    pixels = np.asarray(img.resize((w, h)), np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_bytes(name: str) -> bytes:
    """The bytes of a photo in ../shared/testdata/faces."""
    return face(name).read_bytes()


def blank_png(width: int = 200, height: int = 200) -> bytes:
    """A valid image without any face."""
    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), (128, 128, 128)).save(buf, "PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: str
    role: str


@dataclass
class Server:
    url: str
    home: Path
    keys: dict[str, Key]
    proc: subprocess.Popen[bytes]
    log: Path
    signing_key: Path

    def settings(self) -> Settings:
        """Settings for opening the server's data directory from a test (the same audit
        signing key, kept outside the directory)."""
        return Settings(home=self.home, audit_signing_key=self.signing_key)

    def rekognition(self, role: str, *, secret: str | None = None, key_id: str | None = None,
                    retries: int = 1) -> Any:
        """A boto3 Rekognition client signing with the ``role`` key (or the given id/secret)."""
        k = self.keys[role]
        return self.client(key_id or k.key_id, secret or k.secret, retries=retries)

    def client(self, key_id: str, secret: str, *, retries: int = 1) -> Any:
        """A boto3 Rekognition client signing with any key; its responses are walked against
        botocore's model (:func:`.shapes.watch`)."""
        import boto3
        from botocore.config import Config

        return watch(boto3.client(
            "rekognition", endpoint_url=self.url, region_name="eu-west-1",
            aws_access_key_id=key_id, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": retries, "mode": "standard"})))

    def cli(self, *args: str) -> CliResult:
        """``facesearch ARGS`` on the server's data directory (the operator's side; run in
        the test process, :mod:`tests.clirun`)."""
        proc = run_cli(*args, env={"FACESEARCH_HOME": str(self.home),
                                   "FACESEARCH_AUDIT_SIGNING_KEY": str(self.signing_key)})
        assert proc.returncode == 0, proc.stderr
        return proc

    def native(self, role: str | None, *, secret: str | None = None) -> httpx.Client:
        """An httpx client for /v1 with the ``role`` key as a bearer token (None: no key)."""
        headers = {}
        if role is not None:
            k = self.keys[role]
            headers["Authorization"] = f"Bearer {k.key_id}:{secret or k.secret}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def signing_key_for(home: Path) -> Path:
    """Where a test deployment on ``home`` keeps its audit signing key: beside the data
    directory, never in it (as docs/security.md asks)."""
    return home.parent / f"{home.name}-secrets" / "audit-ed25519.pem"


def make_keys(home: Path) -> dict[str, Key]:
    with FaceSearch(Settings(home=home, audit_signing_key=signing_key_for(home))) as fs:
        out = {}
        for role in ROLES:
            new = fs.keys.create(role, label=f"test {role}")
            out[role] = Key(new.info.key_id, new.secret, role)
        return out


def start_server(home: Path, log: Path, **env: str) -> Server:
    """Start ``facesearch serve`` on a free loopback port; wait until it is ready."""
    keys = make_keys(home)
    port = free_port()
    full_env = {**os.environ, "FACESEARCH_HOME": str(home), "FACESEARCH_API_WORKERS": "2",
                "FACESEARCH_AUDIT_SIGNING_KEY": str(signing_key_for(home)),
                "FACESEARCH_SEARCHES_PER_MINUTE": "0",
                # Tests share one loopback source: only the throttle's own test turns it on.
                "FACESEARCH_API_AUTH_FAILURES_PER_MINUTE": "0", **env}
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "facesearch", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=full_env, stdout=out,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not get ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return Server(url, home, keys, proc, log, signing_key_for(home))


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """AWS-compatible services (moto, server mode: S3, SNS, SQS, Kinesis) on loopback, with
    the bucket ``probes`` holding obama2.jpg, a text file and :data:`TINY_VIDEO_KEY`."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    url = f"http://127.0.0.1:{port}"
    s3 = aws(url, "s3")
    s3.create_bucket(Bucket=S3_BUCKET)
    s3.put_object(Bucket=S3_BUCKET, Key="obama2.jpg", Body=image_bytes("obama2.jpg"))
    s3.put_object(Bucket=S3_BUCKET, Key="notes.txt", Body=b"not an image")
    video = make_video(tmp_path_factory.mktemp("video") / "tiny.mp4")
    s3.put_object(Bucket=S3_BUCKET, Key=TINY_VIDEO_KEY, Body=video.read_bytes())
    yield url
    moto.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, s3_url: str) -> Iterator[Server]:
    """One server for the session (tests use their own collection names), with the moto
    services as its S3 store and its SNS and Kinesis endpoints."""
    root = tmp_path_factory.mktemp("api")
    srv = start_server(root / "home", root / "server.log",
                       FACESEARCH_API_S3_ENDPOINT_URL=s3_url,
                       FACESEARCH_API_S3_ACCESS_KEY_ID=S3_CREDS["AWS_ACCESS_KEY_ID"],
                       FACESEARCH_API_S3_SECRET_ACCESS_KEY=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
                       **aws_env(s3_url))
    yield srv
    stop_server(srv)


def sns_to_sqs(moto_url: str, name: str) -> tuple[str, str]:
    """An SNS topic with an SQS queue subscribed to it (the pattern of AWS's video examples):
    ``(topic ARN, queue URL)``."""
    sns, sqs = aws(moto_url, "sns"), aws(moto_url, "sqs")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue,
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, queue


def sqs_message(moto_url: str, queue: str, timeout_s: float = 600) -> dict[str, Any]:
    """The next Rekognition message on ``queue`` (the SNS envelope's ``Message``, decoded),
    polled as AWS's examples do; fails after ``timeout_s``."""
    sqs = aws(moto_url, "sqs")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            message: dict[str, Any] = json.loads(json.loads(m["Body"])["Message"])
            return message
    pytest.fail(f"no message on {queue} within {timeout_s:.0f} s", pytrace=False)


def kinesis_stream(moto_url: str, name: str) -> str:
    """A one-shard Kinesis data stream on the moto server; its ARN."""
    kin = aws(moto_url, "kinesis")
    kin.create_stream(StreamName=name, ShardCount=1)
    arn: str = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamARN"]
    return arn


class KinesisReader:
    """Reads a one-shard stream from its start, as a consumer of Rekognition's output does."""

    def __init__(self, moto_url: str, name: str) -> None:
        self.kin = aws(moto_url, "kinesis")
        shard = self.kin.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        self.iterator = self.kin.get_shard_iterator(
            StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

    def records(self) -> list[dict[str, Any]]:
        """The records written since the last call (decoded JSON)."""
        out = self.kin.get_records(ShardIterator=self.iterator, Limit=1000)
        self.iterator = out["NextShardIterator"]
        return [json.loads(r["Data"]) for r in out["Records"]]


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with one worker, no wait queue and a 64 KiB body limit (for throttling and
    size limits)."""
    root = tmp_path_factory.mktemp("api-small")
    srv = start_server(root / "home", root / "server.log", FACESEARCH_API_WORKERS="1",
                       FACESEARCH_API_QUEUE="0", FACESEARCH_API_MAX_BODY_BYTES="65536")
    yield srv
    stop_server(srv)


def log_lines(server: Server) -> list[dict[str, Any]]:
    """The server's structured log lines so far."""
    out = []
    for line in server.log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out

