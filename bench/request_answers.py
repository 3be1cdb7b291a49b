"""What running a Rekognition request once costs: claiming its signature in the metadata
database before it runs and recording its answer after (``facesearch.api.replay``), per
request, on SQLite in a temporary data directory, one thread.

    .venv/bin/python bench/request_answers.py [--requests 2000] [--body-bytes 2048]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from facesearch.storage.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--body-bytes", type=int, default=2048)
    args = ap.parse_args()
    body = os.urandom(args.body_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "facesearch.db")
        claim, record = [], []
        for i in range(args.requests):
            now = time.time()
            t0 = time.perf_counter()
            assert store.requests.claim_answer(f"sig:{i:064x}", "", now + 900, now)
            t1 = time.perf_counter()
            store.requests.record_answer(f"sig:{i:064x}", 200, body, now + 600)
            t2 = time.perf_counter()
            claim.append(t1 - t0)
            record.append(t2 - t1)
        store.close()
    for name, xs in (("claim", claim), ("record", record),
                     ("both", [a + b for a, b in zip(claim, record, strict=True)])):
        xs = sorted(xs)
        print(f"{name}: median {statistics.median(xs) * 1000:.2f} ms, "
              f"p99 {xs[int(len(xs) * 0.99)] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
