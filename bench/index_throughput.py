"""Indexing throughput: facesearch's bulk indexer beside face_recognition's pipeline.

Both run on the same images in the same run, each using every core (facesearch: its worker
processes; face_recognition: a process pool running ``face_encodings(load_image_file(f))``).

    .venv/bin/python bench/index_throughput.py [--limit N] [--pipeline NAME] [--no-baseline]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "testdata" / "lfw-dev" / "images"


def _fr_one(path: str) -> int:
    import face_recognition

    return len(face_recognition.face_encodings(face_recognition.load_image_file(path)))


def baseline(files: list[Path], workers: int) -> tuple[float, int, int]:
    """face_recognition on ``workers`` processes: (seconds, images with a face, faces)."""
    t = time.perf_counter()
    with Pool(workers) as pool:
        counts = pool.map(_fr_one, [str(f) for f in files], chunksize=4)
    return time.perf_counter() - t, sum(c > 0 for c in counts), sum(counts)


def ours(files: list[Path], workers: int, overrides: dict[str, str]) -> tuple[float, int, int]:
    """facesearch's bulk indexer with the configured settings and ``overrides``."""
    from facesearch.service import FaceSearch
    from facesearch.services.indexing import BulkIndexer, IdFrom

    with tempfile.TemporaryDirectory() as home, FaceSearch.open(home, **overrides) as fs:
        fs.collections.create("bench")
        idx = BulkIndexer(fs.collections, "bench", settings=fs.settings, workers=workers,
                          id_from=IdFrom.PARENT)
        t = time.perf_counter()
        s = idx.run(files)
        return time.perf_counter() - t, s.indexed, s.faces


def parse_config(text: str) -> dict[str, str]:
    """``"precision=int8,detector_model=short"`` to settings overrides (``""``: defaults)."""
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--limit", type=int, default=0, help="N images spread over the set (0: all)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--config", action="append", default=None,
                    help="settings to run facesearch with, e.g. 'precision=int8,"
                         "detector_model=short' (repeat to compare; default: the configured)")
    args = ap.parse_args()
    configs = args.config or [""]
    files = sorted(args.images.glob("*/*.jpg"))
    if not files:
        sys.exit(f"no images under {args.images}")
    if args.limit:
        step = max(1, len(files) // args.limit)
        files = files[::step][: args.limit]
    print(f"{len(files)} images from {args.images}, {args.workers} workers, "
          f"CPU: {os.cpu_count()} cores")
    rows = []
    for text in configs:
        secs, imgs, faces = ours(files, args.workers, parse_config(text))
        rows.append((f"facesearch ({text or 'defaults'})", secs, imgs, faces))
    if not args.no_baseline:
        rows.append(("face_recognition", *baseline(files, args.workers)))
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'pipeline':{width}} {'seconds':>8} {'images/s':>9} {'faces/s':>8} "
          f"{'with face':>9} {'faces':>6}")
    for name, secs, imgs, faces in rows:
        print(f"{name:{width}} {secs:8.1f} {len(files) / secs:9.1f} {faces / secs:8.1f} "
              f"{imgs:9d} {faces:6d}")
    if not args.no_baseline:
        base = rows[-1][1]
        for name, secs, *_ in rows[:-1]:
            print(f"speed-up of {name} over face_recognition: {base / secs:.1f}x")


if __name__ == "__main__":
    main()
