"""Unauthenticated large bodies against a running server: its memory before and after.

Starts ``facesearch serve`` on a fresh data directory, then sends ``--clients`` concurrent
requests without valid credentials, each announcing and sending a ``--mb`` MB body, to
``POST /`` (Rekognition, a made-up SigV4 key), ``POST /v1/detect`` (a made-up bearer key) and
the same with a chunked body (no Content-Length). Prints the server's resident memory
(VmRSS, and the peak VmHWM) before and after, and the status codes it answered.

    .venv/bin/python bench/attack_bodies.py [--clients 24] [--mb 40]
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
from collections import Counter
from pathlib import Path

import httpx


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def attack(port: int, path: str, headers: dict[str, str], mb: int, chunked: bool,
           codes: Counter[str]) -> None:
    body = b"\0" * (1024 * 1024)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {mb * len(body)}"]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for _ in range(mb):
                s.sendall(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what we want
        try:
            line = s.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as exc:
            line = f"closed ({type(exc).__name__})"
    codes[line or "closed"] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--mb", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "FACESEARCH_HOME": str(home),
               "FACESEARCH_AUDIT_SIGNING_KEY": str(Path(tmp) / "audit.pem")}
        proc = subprocess.Popen([sys.executable, "-m", "facesearch", "serve", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            before = rss(proc.pid)
            print(f"server ready: RSS {before[0]:.0f} MB")
            sig = ("AWS4-HMAC-SHA256 Credential=FSAKNOTAKEY0000000000/20261205/eu-west-1/"
                   "rekognition/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, "
                   "Signature=" + "0" * 64)
            runs = [("POST / (SigV4, unknown key)", "/", {
                        "Authorization": sig, "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ",
                                                                           time.gmtime()),
                        "X-Amz-Target": "RekognitionService.DetectFaces",
                        "Content-Type": "application/x-amz-json-1.1"}, False),
                    ("POST /v1/detect (bearer, unknown key)", "/v1/detect",
                     {"Authorization": "Bearer FSAKNOTAKEY:secret"}, False),
                    ("POST /v1/detect (chunked, no key)", "/v1/detect", {}, True)]
            for label, path, headers, chunked in runs:
                codes: Counter[str] = Counter()
                t = time.perf_counter()
                threads = [threading.Thread(target=attack, args=(port, path, headers, args.mb,
                                                                 chunked, codes))
                           for _ in range(args.clients)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                now = rss(proc.pid)
                print(f"{label}: {args.clients} x {args.mb} MB in {time.perf_counter() - t:.1f} s;"
                      f" answers {dict(codes)}; RSS {now[0]:.0f} MB, peak {now[1]:.0f} MB")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
