"""Small faces in stills: recall by inter-ocular distance, time per 1080p image, and memory on
large collages.

Scenes: 1920x1080 canvases (a blurred, darkened lfw-dev photo as background) with lfw-dev
photos pasted at known sizes, so that each pasted face's inter-ocular distance (IOD) is one of
12, 16, 20, 24, 32, 48, 96 px (three of each per scene, none overlapping). A pasted face
counts as found when a detection's five landmarks lie within 0.5 IOD of the expected ones on
average. "other" counts detections matching no pasted face: mostly real faces in the pasted
photos' and the background's own backgrounds (LFW photos often show other people), so it is
an upper bound of false detections. Then a collage (``--collage N``: N lfw-dev photos of
distinct people on a square grid, each ``--cell`` px) through the whole pipeline (detect,
align, quality, embed) in a fresh process each, with its peak resident memory.

    .venv/bin/python bench/small_faces.py [--scenes 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

LFW = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "lfw-dev" / "images"
IODS = (12, 16, 20, 24, 32, 48, 96)
Scene = tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]


def read(path: Path) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def scenes(n: int, seed: int = 0) -> list[Scene]:
    """``n`` canvases and, for each, the expected landmarks (M, 5, 2) of its pasted faces."""
    from facesearch.vision.detect import BlazeFaceDetector

    rng = np.random.default_rng(seed)
    files = sorted(LFW.glob("*/*.jpg"))
    ref = BlazeFaceDetector(min_face=None)
    out = []
    for _ in range(n):
        bg = read(files[rng.integers(len(files))])
        canvas = (cv2.resize(cv2.GaussianBlur(bg, (0, 0), 3), (1920, 1080)) * 0.6
                  ).astype(np.uint8)
        truth = []
        occupied = np.zeros((1080, 1920), bool)
        for iod in list(IODS) * 3:
            img = read(files[rng.integers(len(files))])
            faces = ref.detect(img)
            if not len(faces):
                continue
            i = int(np.argmin(np.linalg.norm(faces.landmarks.mean(1) - 125, axis=1)))
            lm = faces.landmarks[i]
            side = max(8, round(250 * iod / float(np.linalg.norm(lm[1] - lm[0]))))
            for _try in range(30):
                x0, y0 = int(rng.integers(0, 1920 - side)), int(rng.integers(0, 1080 - side))
                if not occupied[y0:y0 + side, x0:x0 + side].any():
                    break
            else:
                continue
            occupied[y0:y0 + side, x0:x0 + side] = True
            canvas[y0:y0 + side, x0:x0 + side] = cv2.resize(img, (side, side),
                                                            interpolation=cv2.INTER_AREA)
            truth.append((lm + 0.5) * (side / 250) - 0.5 + np.array([x0, y0]))
        out.append((np.ascontiguousarray(canvas), np.array(truth, np.float32)))
    return out


def evaluate(label: str, detector: object, data: list[Scene]) -> None:
    found = {i: [0, 0] for i in IODS}
    other = 0
    times = []
    for img, truth in data:
        t = time.perf_counter()
        faces = detector.detect(img)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
        used = np.zeros(len(faces), bool)
        for want in truth:
            iod = float(np.linalg.norm(want[1] - want[0]))
            key = min(IODS, key=lambda v: abs(v - iod))
            found[key][1] += 1
            if len(faces):
                err = np.linalg.norm(faces.landmarks - want, axis=2).mean(1) / iod
                j = int(err.argmin())
                if err[j] < 0.5 and not used[j]:
                    used[j] = True
                    found[key][0] += 1
        other += int((~used).sum())
    rec = " | ".join(f"{100 * a / max(b, 1):.0f} %" for a, b in found.values())
    print(f"| {label} | {1000 * float(np.median(times)):.1f} ms | {rec} | {other} |", flush=True)


def collage(n: int, cell: int, threads: int) -> dict[str, float]:
    """In this process: a collage of ``n`` photos through the pipeline."""
    from facesearch.vision.decode import load_image
    from facesearch.vision.pipeline import load_pipeline

    folders = sorted(p for p in LFW.iterdir() if p.is_dir())
    folders = folders[:: max(1, len(folders) // n)][:n]
    grid = int(np.ceil(np.sqrt(n)))
    canvas = np.zeros((grid * cell, grid * cell, 3), np.uint8)
    for k, folder in enumerate(folders):
        r, c = divmod(k, grid)
        canvas[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = cv2.resize(
            read(sorted(folder.glob("*.jpg"))[0]), (cell, cell), interpolation=cv2.INTER_AREA)
    pipeline = load_pipeline(threads=threads)
    image = load_image(canvas)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    faces = pipeline.analyze(image)
    seconds = time.perf_counter() - t
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    cells = {(int(y // cell), int(x // cell)) for x, y in centres
             if abs(x % cell - cell / 2) < cell / 5 and abs(y % cell - cell / 2) < cell / 5}
    return {"photos": len(folders), "side": grid * cell, "faces": len(faces),
            "photos_found": len(cells), "seconds": seconds,
            "rss_before_mb": before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--collage", type=int, nargs=2, metavar=("N", "CELL"), action="append",
                    help="one collage run in this process (used by the main run)")
    args = ap.parse_args()
    if args.collage:
        n, cell = args.collage[0]
        print(json.dumps(collage(n, cell, args.threads)))
        return 0
    from facesearch.vision.detect import BlazeFaceDetector

    data = scenes(args.scenes)
    total = sum(len(t) for _, t in data)
    print(f"{len(data)} scenes of 1920x1080, {total} pasted faces, {args.threads} thread(s)\n")
    print("| detector | ms per image (median) | " + " | ".join(f"{i} px" for i in IODS)
          + " | other |")
    print("|---|---|" + "---|" * len(IODS) + "---|")
    for label, kw in [("BlazeFace alone (`min_face=0`)", {"min_face": None}),
                      ("**default** (`min_face=24`)", {}),
                      ("`min_face=16`", {"min_face": 16}),
                      ("`min_face=12`", {"min_face": 12}),
                      ("`min_face=40`", {"min_face": 40})]:
        evaluate(label, BlazeFaceDetector(threads=args.threads, **kw), data)  # type: ignore[arg-type]
    print("\n| collage | image | photos with their face found | faces | seconds | peak memory |")
    print("|---|---|---|---|---|---|")
    for n, cell in ((100, 130), (400, 250)):
        out = subprocess.run([sys.executable, __file__, "--collage", str(n), str(cell),
                              "--threads", str(args.threads)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {n} photos of {cell} px | {r['side']}x{r['side']} | "
              f"{r['photos_found']} / {r['photos']} | {r['faces']} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} MB (models loaded: {r['rss_before_mb']:.0f} MB) |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
