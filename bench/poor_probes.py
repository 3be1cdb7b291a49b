"""Variants for poor probes without new weights: FNIR at FPIR 1 % per degradation.

Same protocol as :func:`facesearch.evaluation.quality_bands.fnir_by_degradation` (lfw-dev
identities in a seeded order, even ones enrolled with their clean first photo and a junk
entry, odd ones searched as people not enrolled, threshold per degradation and variant at FPIR
1 % of that degradation's non-mated searches, failures to detect count as misses). Variants,
each applied to gallery and probes alike:

- ``sface``: the default (BlazeFace + O-Net landmarks, ArcFace warp, SFace);
- ``sface+flip``: the mean of the face's and its mirror's embeddings (``FACESEARCH_FLIP``);
- ``sface, flip landmarks``: O-Net run on the crop and its mirror, landmarks averaged (less
  landmark jitter on small faces; ``BlazeFaceDetector(flip_landmarks=True)``);
- ``sface, upscaled small``: a probe whose eyes are under 24 px apart is enlarged (bicubic)
  so they are 24 px apart before detection and alignment (a different alignment input for small
  faces);
- ``fusion``: SFace's and dlib ResNet's cosines, each standardised by its non-mated scores,
  averaged; ``fusion if poor``: that only for probes whose recognisability is below 60.

    .venv/bin/python bench/poor_probes.py --people 200
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facesearch.evaluation.quality_bands import (
    DEGRADATIONS,
    _read,
    central_face,
    people,
    to_iod,
)
from facesearch.types import Image
from facesearch.vision.detect import BlazeFaceDetector
from facesearch.vision.embed import OnnxResNetEmbedder
from facesearch.vision.pipeline import Pipeline, load_pipeline

LFW = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "lfw-dev" / "images"
VARIANTS = ("sface", "sface+flip", "sface, flip landmarks", "sface, upscaled small", "dlib")


class Embedders:
    def __init__(self) -> None:
        self.base = load_pipeline("fast", threads=1)
        self.flip = load_pipeline("fast", threads=1, flip=True)
        self.flip_lm = Pipeline(BlazeFaceDetector(flip_landmarks=True, threads=1),
                                self.base.embedder)
        self.dlib = Pipeline(self.base.detector, OnnxResNetEmbedder(threads=1))

    def all(self, px: npt.NDArray[np.uint8]) -> dict[str, tuple[np.ndarray, float, float]] | None:
        """Per variant: (embedding, recognisability, inter-ocular px) of the central face."""
        out: dict[str, tuple[np.ndarray, float, float]] = {}
        img = Image(np.ascontiguousarray(px), "", "RAW")
        faces = self.base.detect(img)
        i = central_face(faces, img.width, img.height)
        if i is None:
            return None
        one = faces[[i]]
        e = self.base.embed(img, one)
        assert e.quality is not None and e.embeddings is not None
        iod = float(e.quality.size[0])
        rec = float(e.quality.recognisability[0])
        out["sface"] = (e.embeddings[0], rec, iod)
        out["sface+flip"] = (self.flip.embed(img, one).embeddings[0], rec, iod)  # type: ignore[index]
        out["dlib"] = (self.dlib.embed(img, one).embeddings[0], rec, iod)  # type: ignore[index]
        fl = self.flip_lm.detect(img)
        j = central_face(fl, img.width, img.height)
        if j is not None:
            out["sface, flip landmarks"] = (self.flip_lm.embed(img, fl[[j]]).embeddings[0],  # type: ignore[index]
                                            rec, iod)
        if iod < 24:
            k = 24.0 / iod
            big = cv2.resize(px, (round(px.shape[1] * k), round(px.shape[0] * k)),
                             interpolation=cv2.INTER_CUBIC)
            bimg = Image(np.ascontiguousarray(big), "", "RAW")
            bf = self.base.detect(bimg)
            j = central_face(bf, bimg.width, bimg.height)
            if j is not None:
                out["sface, upscaled small"] = (self.base.embed(bimg, bf[[j]]).embeddings[0],  # type: ignore[index]
                                                rec, iod)
        else:
            out["sface, upscaled small"] = out["sface"]
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=200)
    args = ap.parse_args()
    em = Embedders()
    t0 = time.time()
    gallery: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
    gal_p: list[int] = []
    probes: list[tuple[int, str, dict[str, tuple[np.ndarray, float, float]] | None]] = []
    for k, photos in enumerate(people(LFW, args.people)):
        if k % 2:  # not enrolled
            pass
        else:
            first = _read(photos[0])
            g = em.all(first)
            if g is None or len(g) < len(VARIANTS):
                continue
            junk = em.all(to_iod(6.0)(first, g["sface"][2]))
            for v in VARIANTS:
                gallery[v].append(g[v][0])
            gal_p.append(k)
            if junk is not None and len(junk) == len(VARIANTS):
                for v in VARIANTS:
                    gallery[v].append(junk[v][0])
                gal_p.append(-1 - k)
        px = _read(photos[1])
        ref = em.all(px)
        if ref is None:
            continue
        for name, degrade in DEGRADATIONS.items():
            probes.append((k, name, em.all(degrade(px, ref["sface"][2]))))
    print(f"{len(probes)} probes, {len(gal_p)} gallery entries in {time.time() - t0:.0f} s",
          file=sys.stderr)
    gp = np.array(gal_p)
    G = {v: np.array(gallery[v]) for v in VARIANTS}

    def score(v: str, e: dict[str, tuple[np.ndarray, float, float]]) -> np.ndarray:
        return G[v] @ e[v][0]

    # Standardisation of each embedder's cosines by the non-mated (odd identities') scores.
    stats = {}
    for v in ("sface", "dlib"):
        s = np.concatenate([score(v, e) for k, _, e in probes if e and k % 2])
        stats[v] = (float(s.mean()), float(s.std()))

    def fused(e: dict[str, tuple[np.ndarray, float, float]], only_poor: bool) -> np.ndarray:
        a = (score("sface", e) - stats["sface"][0]) / stats["sface"][1]
        if only_poor and e["sface"][1] >= 60:
            return a
        b = (score("dlib", e) - stats["dlib"][0]) / stats["dlib"][1]
        return (a + b) / 2

    methods: dict[str, Callable[[dict[str, tuple[np.ndarray, float, float]]], np.ndarray]] = {
        v: (lambda e, v=v: score(v, e)) for v in VARIANTS if v != "dlib"}
    methods["fusion"] = lambda e: fused(e, False)
    methods["fusion if poor"] = lambda e: fused(e, True)
    degs = list(DEGRADATIONS)
    print("| variant | " + " | ".join(degs) + " |")
    print("|---|" + "---|" * len(degs))
    for m, f in methods.items():
        row = []
        for d in degs:
            mated_ok, mated_n, non = 0, 0, []
            mates = []
            for k, name, e in probes:
                if name != d:
                    continue
                usable = e is not None and (m in ("fusion", "fusion if poor") or m in e)
                if k % 2 == 0:
                    mated_n += 1
                    if usable:
                        s = f(e)  # type: ignore[arg-type]
                        mates.append(float(s[gp == k].max()) if (gp == k).any() else -9.0)
                    else:
                        mates.append(-9.0)
                elif usable:
                    non.append(float(f(e).max()))  # type: ignore[arg-type]
            thr = float(np.quantile(non, 0.99))
            mated_ok = sum(s >= thr for s in mates)
            row.append(f"{1 - mated_ok / max(mated_n, 1):.3f}")
        print(f"| {m} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
