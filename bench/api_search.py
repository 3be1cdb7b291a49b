"""SearchFacesByImage through the Rekognition-compatible endpoint, 16 concurrent boto3 clients.

Fills a collection with N synthetic faces (default 300,000; ``search_latency.fill``), starts
``facesearch serve`` on loopback, then has C clients (default 16) send R requests in all
(default 320) of SearchFacesByImage with a real probe photo, and prints requests/s and the
p50/p99 latency seen by the clients.

    .venv/bin/python bench/api_search.py [--faces 300000] [--clients 16] [--requests 320]
                                         [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from search_latency import PROBE, fill


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not get ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=300_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=320)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-faces", type=int, default=10)
    args = ap.parse_args()
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from facesearch.service import FaceSearch

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with FaceSearch.open(home) as fs:
            fs.collections.create("big")
            t = time.perf_counter()
            fill(fs, "big", args.faces)
            with fs.store.transaction() as conn:
                coll = fs.store.collections.get(conn, "big")
            fs.indexes.rebuild(coll)  # the form the size calls for, written to its file
            key = fs.keys.create("searcher", label="benchmark")
            print(f"filled {args.faces} faces and built the index in "
                  f"{time.perf_counter() - t:.1f} s")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "FACESEARCH_HOME": str(home), "FACESEARCH_SEARCHES_PER_MINUTE": "0",
               "FACESEARCH_API_WORKERS": str(args.workers),
               "FACESEARCH_API_QUEUE": str(4 * args.clients), "FACESEARCH_API_LOG_LEVEL": "warning"}
        proc = subprocess.Popen([sys.executable, "-m", "facesearch", "serve", "--port", str(port)],
                                env=env)
        try:
            wait_ready(url, proc)
            probe = PROBE.read_bytes()

            def client() -> Any:
                c = boto3.client("rekognition", endpoint_url=url, region_name="us-east-1",
                                 aws_access_key_id=key.info.key_id,
                                 aws_secret_access_key=key.secret,
                                 config=Config(retries={"max_attempts": 1},
                                               max_pool_connections=2, read_timeout=300))
                # Identical calls in one second share a signature, and the server answers a
                # search's repeat with the first answer (facesearch.api.replay): sign a unique
                # header on each, so that every request is searched.
                c.meta.events.register("before-sign.rekognition.*", lambda request, **_: (
                    request.headers.__setitem__("x-amz-meta-nonce", uuid.uuid4().hex)))
                return c

            # Warm-up, not timed: every inference worker loads its models on its first
            # request, so send as many at once as there are clients.
            def warm() -> None:
                client().search_faces_by_image(CollectionId="big", Image={"Bytes": probe})

            warmers = [threading.Thread(target=warm) for _ in range(args.clients)]
            for th in warmers:
                th.start()
            for th in warmers:
                th.join()
            latencies: list[float] = []
            errors: dict[str, int] = {}
            lock = threading.Lock()
            per_client = [args.requests // args.clients + (i < args.requests % args.clients)
                          for i in range(args.clients)]

            def run(n: int) -> None:
                rek = client()
                for _ in range(n):
                    t0 = time.perf_counter()
                    try:
                        rek.search_faces_by_image(
                            CollectionId="big", Image={"Bytes": probe}, MaxFaces=args.max_faces)
                    except ClientError as exc:
                        with lock:
                            c = exc.response["Error"]["Code"]
                            errors[c] = errors.get(c, 0) + 1
                        continue
                    with lock:
                        latencies.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=run, args=(n,)) for n in per_client]
            server_cpu0, client_cpu0 = cpu_seconds(proc.pid), time.process_time()
            start = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - start
            server_cpu = cpu_seconds(proc.pid) - server_cpu0
            client_cpu = time.process_time() - client_cpu0
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lat = np.array(latencies) * 1000
    load = os.getloadavg()
    print(f"collection: {args.faces} faces; {args.clients} clients; {args.workers} inference "
          f"workers; {len(lat)} ok, errors {errors or 'none'}")
    print(f"SearchFacesByImage: {len(lat) / wall:.2f} requests/s   "
          f"p50 {np.percentile(lat, 50):.0f} ms   p99 {np.percentile(lat, 99):.0f} ms")
    n = max(len(lat), 1)
    print(f"CPU per request: server {server_cpu / n * 1000:.1f} ms, the {args.clients} boto3 clients "
          f"{client_cpu / n * 1000:.1f} ms")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
