"""Shared fixtures of the HTTP API tests: a real server process on loopback (started with
``python -m facesearch serve``), access keys for every role, boto3 and httpx clients, and an
S3-compatible store (moto in server mode) for ``Image.S3Object``."""

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

from ..conftest import face

ROLES = ("admin", "indexer", "searcher", "auditor")
S3_BUCKET = "probes"
S3_CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


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
        import boto3
        from botocore.config import Config

        k = self.keys[role]
        return boto3.client(
            "rekognition", endpoint_url=self.url, region_name="eu-west-1",
            aws_access_key_id=key_id or k.key_id, aws_secret_access_key=secret or k.secret,
            config=Config(retries={"max_attempts": retries, "mode": "standard"}))

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
                "FACESEARCH_SEARCHES_PER_MINUTE": "0", **env}
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
def s3_url() -> Iterator[str]:
    """An S3-compatible store (moto, server mode) on loopback with the bucket ``probes``
    holding obama2.jpg and a text file."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=S3_BUCKET)
    s3.put_object(Bucket=S3_BUCKET, Key="obama2.jpg", Body=image_bytes("obama2.jpg"))
    s3.put_object(Bucket=S3_BUCKET, Key="notes.txt", Body=b"not an image")
    yield url
    moto.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, s3_url: str) -> Iterator[Server]:
    """One server for the session (tests use their own collection names)."""
    root = tmp_path_factory.mktemp("api")
    srv = start_server(root / "home", root / "server.log",
                       FACESEARCH_API_S3_ENDPOINT_URL=s3_url,
                       FACESEARCH_API_S3_ACCESS_KEY_ID=S3_CREDS["AWS_ACCESS_KEY_ID"],
                       FACESEARCH_API_S3_SECRET_ACCESS_KEY=S3_CREDS["AWS_SECRET_ACCESS_KEY"])
    yield srv
    stop_server(srv)


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

