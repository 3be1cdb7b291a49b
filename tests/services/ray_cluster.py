"""A local Ray cluster for tests and benchmarks: a head and worker nodes, each its own
``ray start --block`` process on its own loopback address (127.0.0.2, 127.0.0.3, ...), so
that nothing leaves the machine; stopped by signalling only the processes it started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import facesearch

RAY = Path(sys.executable).with_name("ray")
SRC = Path(facesearch.__file__).resolve().parents[1]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalRay:
    """``workers`` worker nodes besides the head; each node offers ``cpus`` CPUs and an object
    store of ``store_mb`` MB. Worker processes import facesearch from this checkout."""

    def __init__(self, workers: int = 1, *, cpus: int = 1, store_mb: int = 100,
                 env: dict[str, str] | None = None) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))
        self.head_ip = "127.0.0.2"
        self.port = free_port(self.head_ip)
        self.address = f"{self.head_ip}:{self.port}"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop at once
                    "PYTHONPATH": os.pathsep.join(
                        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]),
                    **(env or {})}
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            self._start(self.head_ip, ["--head", f"--port={self.port}",
                                       "--include-dashboard=false",
                                       f"--temp-dir={self.temp / 't'}"], cpus, store_mb)
            self._wait(lambda: self._status() == 0, "the head")
            for i in range(workers):
                self._start(f"127.0.0.{3 + i}", [f"--address={self.address}"], cpus, store_mb)
            self._wait(lambda: self.alive_nodes() == workers + 1, "the worker nodes")
        except BaseException:
            self.stop()
            raise

    def _start(self, ip: str, args: list[str], cpus: int, store_mb: int) -> None:
        ports = [f"--{name}={free_port(ip)}" for name in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")]
        log = (self.temp / f"node-{ip}.log").open("wb")
        self.procs.append(subprocess.Popen(
            [str(RAY), "start", "--block", f"--node-ip-address={ip}", f"--num-cpus={cpus}",
             "--num-gpus=0", f"--object-store-memory={store_mb * 1_000_000}",
             "--disable-usage-stats", *ports, *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True))
        log.close()

    def _status(self) -> int:
        return subprocess.run([str(RAY), "status", f"--address={self.address}"],
                              env=self.env, capture_output=True, check=False).returncode

    def alive_nodes(self) -> int:
        out = subprocess.run([str(RAY), "status", f"--address={self.address}"], env=self.env,
                             capture_output=True, text=True, check=False).stdout
        active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def _wait(self, check: object, what: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():  # type: ignore[operator]
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a Ray node exited while starting {what}: "
                                       f"{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start in {timeout_s:.0f} s: {self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:]
                         for p in sorted(self.temp.glob("node-*.log")))

    def stop(self) -> None:
        """Stop the nodes this object started (their process groups), workers first."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.procs.clear()
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
