"""Bulk indexing on a Ray cluster against this machine's processes: images/s, and the cost of
one Ray task.

``N`` lfw-dev images (default 200) are indexed into a fresh collection by
:class:`facesearch.services.indexing.BulkIndexer`: with one worker process, with one per core,
and as Ray tasks on a local cluster (:class:`tests.services.ray_cluster.LocalRay`: a head and
one worker node on loopback, one CPU each, so two tasks at once), first with its workers cold
(each loads the pipeline), then warm. Every run includes reading, hashing and writing through
the store. The per-task overhead is the round trip of a task with nothing to analyse (the
pipeline already loaded), against the same through the local process pool.

    .venv/bin/python bench/ray_index.py [--n 200] [--chunk 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facesearch.config import Settings
from facesearch.service import FaceSearch
from facesearch.services.cluster import RayCluster
from facesearch.services.indexing import BulkIndexer, LocalPool
from tests.services.ray_cluster import LocalRay

LFW = ROOT.parent / "shared" / "testdata" / "lfw-dev" / "images"


def run(fs: FaceSearch, name: str, files: list[Path], chunk: int, **kw: object) -> float:
    fs.collections.create(name)
    t = time.perf_counter()
    s = BulkIndexer(fs.collections, name, settings=fs.settings, chunk=chunk, **kw).run(files)
    dt = time.perf_counter() - t
    assert s.indexed + s.no_face == len(files), s
    return len(files) / dt


def overhead(pool: object, tasks: int = 50) -> float:
    """Milliseconds per task of an empty chunk, one at a time (after a warm-up task)."""
    pool.submit([]).result()  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(tasks):
        pool.submit([]).result()  # type: ignore[attr-defined]
    return (time.perf_counter() - t) / tasks * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=8)
    args = ap.parse_args()
    files = sorted(LFW.rglob("*.jpg"))[:args.n]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        fs = FaceSearch(Settings(home=Path(tmp) / "home",
                                 audit_signing_key=Path(tmp) / "k" / "audit.pem"))
        try:
            rows.append(("one process (1 worker)", run(fs, "one", files, args.chunk, workers=1)))
            rows.append(("this machine (2 workers)", run(fs, "two", files, args.chunk,
                                                         workers=2)))
            local = LocalPool(fs.settings, 1, frozenset())
            try:
                local_ms = overhead(local)
            finally:
                local.close()
            with LocalRay(workers=1, cpus=1) as ray_nodes:
                cluster = RayCluster(ray_nodes.address)
                try:
                    rows.append(("Ray: head + 1 worker node, 1 CPU each (cold)",
                                 run(fs, "ray", files, args.chunk, cluster=cluster)))
                    rows.append(("Ray: the same, warm",
                                 run(fs, "ray2", files, args.chunk, cluster=cluster)))
                    ray_ms = overhead(cluster.pool(fs.settings))
                finally:
                    cluster.shutdown()
        finally:
            fs.shutdown()
    print(f"{len(files)} lfw-dev images, chunks of {args.chunk}, 2-core machine")
    print("| where | images/s |")
    print("|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} |")
    print(f"per-task overhead (empty chunk, round trip): local process pool "
          f"{local_ms:.2f} ms, Ray {ray_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
