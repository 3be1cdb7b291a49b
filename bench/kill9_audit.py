"""kill -9 mid-indexing, several times: does every committed face have its audit event?

Usage: .venv/bin/python bench/kill9_audit.py [--rounds 5] [--images 400]

A child process indexes lfw-dev images one at a time (FaceCollections.index_image, the path
the API's IndexFaces takes); the parent SIGKILLs it after a random number of images, reopens
the data directory (which replays the audit outbox) and counts faces without an index event
and events counted twice. Prints one line per round and the totals.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

LFW = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "lfw-dev" / "images"

CHILD = """
import sys
from pathlib import Path
from facesearch.errors import FaceSearchError
from facesearch.service import FaceSearch
fs = FaceSearch.open(sys.argv[1])
if "c" not in {c.name for c in fs.collections.list_collections()}:
    fs.collections.create("c")
for p in sys.argv[2:]:
    try:
        fs.collections.index_image("c", Path(p))
    except FaceSearchError as exc:  # undecodable or faceless: report and go on
        print("skip", p, exc, flush=True)
        continue
    print("ok", flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=400)
    args = ap.parse_args()
    from facesearch.service import FaceSearch

    images = sorted(LFW.rglob("*.jpg"))[: args.images]
    rng = random.Random(7)
    home = Path(tempfile.mkdtemp()) / "home"
    total_faces = missing = doubled = 0
    start = 0
    for rnd in range(args.rounds):
        batch = [str(p) for p in images[start:]]
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home), *batch],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        kill_after = rng.randint(5, max(6, len(batch) // (args.rounds - rnd)))
        done = 0
        for line in proc.stdout:
            done += 1
            if done >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        start += done
        with FaceSearch.open(home) as fs:
            faces, after = [], 0
            while True:
                page, nxt = fs.collections.list_faces("c", limit=4096, after=after)
                faces += page
                if nxt is None:
                    break
                after = nxt
            records, _ = fs.audit.query(operation="index", limit=10_000)
            audited = [f for r in records for f, _ in r.event.results]
            ids = {f.face_id for f in faces}
            m = len(ids - set(audited))
            d = len(audited) - len(set(audited))
            ok = fs.audit.verify().ok
        print(f"round {rnd + 1}: killed after {done} images; {len(ids)} faces, {m} without "
              f"an audit event, {d} audited twice, chain ok: {ok}")
        total_faces, missing, doubled = len(ids), missing + m, doubled + d
    print(f"total: {total_faces} faces after {args.rounds} kill -9; {missing} without an "
          f"audit event, {doubled} audited twice")


if __name__ == "__main__":
    main()
