"""Embedder speed: ms per face for SFace and the ONNX dlib ResNet (2 and 1 threads), dlib-bin.

Usage: ``python bench/embedder.py [--data DIR] [--rounds N]``. Chips are cut by dlib from
lfw-dev (default ``<repo>/../shared/testdata/lfw-dev``); every engine runs on the same chips
in the same process (SFace on the same chips resized to its 112x112 input: the speed does not
depend on the content). Figures are medians over rounds, in milliseconds per face: wall-clock
time, and in brackets this process's CPU time (all its threads), which is less disturbed by
other load on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
import numpy.typing as npt

from facesearch.vision.convert.dlib_resnet import build_resnet_onnx, dlib_resnet_dat_path
from facesearch.vision.embed import OnnxResNetEmbedder, SFaceEmbedder

Chips = npt.NDArray[np.uint8]
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "lfw-dev"


def make_chips(data: Path, count: int) -> Chips:
    """``count`` 150x150 chips cut by dlib (HOG detector, 5 landmarks, padding 0.25)."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location())
    images = sorted((data / "images").glob("**/*.jpg"))
    if not images:
        raise SystemExit(f"no JPEG files under {data / 'images'}")
    chips: list[Chips] = []
    for path in images[:: max(1, len(images) // (2 * count))]:
        img = dlib.load_rgb_image(str(path))
        chips += [dlib.get_face_chip(img, predictor(img, r), size=150, padding=0.25)
                  for r in detector(img, 0)]
        if len(chips) >= count:
            return np.stack(chips[:count])
    raise SystemExit(f"only {len(chips)} faces found under {data}")


def ms_per_face(run: Callable[[Chips], object], chips: Chips, batch: int,
                rounds: int) -> str:
    """Median over ``rounds`` of the wall (and CPU) time to embed ``chips`` ``batch`` at a
    time, in ms per face, formatted ``"wall (cpu)"``."""
    batches = [chips[i:i + batch] for i in range(0, len(chips), batch)]
    run(batches[0])  # warm-up
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for b in batches:
            run(b)
        wall.append((time.perf_counter() - start) / len(chips) * 1000.0)
        cpu.append((time.process_time() - start_cpu) / len(chips) * 1000.0)
    return f"{statistics.median(wall):7.2f} ({statistics.median(cpu):6.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="lfw-dev folder")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per figure")
    args = parser.parse_args()

    chips = make_chips(args.data, 64)
    model = build_resnet_onnx(dlib_resnet_dat_path())
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{len(chips)} lfw-dev chips, median of {args.rounds} rounds")
    print(f"{'ms per face: wall (cpu)':<28} {'batch 1':>16} {'batch 32':>16}")
    import cv2

    small = np.stack([cv2.resize(c, (112, 112), interpolation=cv2.INTER_AREA) for c in chips])
    for threads in (2, 1):
        sface = SFaceEmbedder(threads=threads, device="cpu", batch_size=32)
        b1 = ms_per_face(sface.embed, small, 1, args.rounds)
        b32 = ms_per_face(sface.embed, small, 32, args.rounds)
        print(f"{f'sface onnx, {threads} thread(s)':<28} {b1:>16} {b32:>16}")
        emb = OnnxResNetEmbedder(threads=threads, device="cpu", batch_size=32, model=model)
        b1 = ms_per_face(emb.embed, chips, 1, args.rounds)
        b32 = ms_per_face(emb.embed, chips, 32, args.rounds)
        print(f"{f'dlib resnet onnx, {threads} thread(s)':<28} {b1:>16} {b32:>16}")

    rec = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    dlib_chips = chips[:32]  # dlib is slow; fewer faces, same kind

    def dlib_batch(b: Chips) -> object:
        return rec.compute_face_descriptor(list(b))

    def dlib_single(b: Chips) -> object:
        return [rec.compute_face_descriptor(c) for c in b]

    d1 = ms_per_face(dlib_single, dlib_chips, 1, max(1, args.rounds // 2))
    d32 = ms_per_face(dlib_batch, dlib_chips, 32, max(1, args.rounds // 2))
    print(f"{'dlib-bin ' + dlib.__version__:<28} {d1:>16} {d32:>16}")


if __name__ == "__main__":
    main()
