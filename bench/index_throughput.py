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


def ours(files: list[Path], pipeline: str, workers: int,
         detector_model: str) -> tuple[float, int, int]:
    from facesearch.indexing import BulkIndexer, IdFrom
    from facesearch.service import FaceSearch

    with tempfile.TemporaryDirectory() as home, FaceSearch.open(
            home, pipeline=pipeline, detector_model=detector_model) as fs:
        fs.collections.create("bench")
        idx = BulkIndexer(fs.collections, "bench", settings=fs.settings, workers=workers,
                          id_from=IdFrom.PARENT)
        t = time.perf_counter()
        s = idx.run(files)
        return time.perf_counter() - t, s.indexed, s.faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--limit", type=int, default=0, help="first N images (0: all)")
    ap.add_argument("--pipeline", default=None, help="pipeline preset (default: the configured one)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--detector-model", default="auto", choices=["auto", "short", "full"],
                    help="fast pipeline: BlazeFace models to run")
    args = ap.parse_args()
    if args.pipeline is None:
        from facesearch.config import Settings

        args.pipeline = Settings().pipeline
    files = sorted(args.images.glob("*/*.jpg"))
    if not files:
        sys.exit(f"no images under {args.images}")
    if args.limit:
        step = max(1, len(files) // args.limit)
        files = files[::step][: args.limit]
    print(f"{len(files)} images from {args.images}, {args.workers} workers, "
          f"CPU: {os.cpu_count()} cores")
    rows = []
    secs, imgs, faces = ours(files, args.pipeline, args.workers, args.detector_model)
    label = args.pipeline + (f", {args.detector_model}" if args.pipeline == "fast" else "")
    rows.append((f"facesearch ({label})", secs, imgs, faces))
    if not args.no_baseline:
        rows.append(("face_recognition", *baseline(files, args.workers)))
    print(f"{'pipeline':28} {'seconds':>8} {'images/s':>9} {'faces/s':>8} "
          f"{'with face':>9} {'faces':>6}")
    for name, secs, imgs, faces in rows:
        print(f"{name:28} {secs:8.1f} {len(files) / secs:9.1f} {faces / secs:8.1f} "
              f"{imgs:9d} {faces:6d}")
    if len(rows) == 2:
        print(f"speed-up: {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
