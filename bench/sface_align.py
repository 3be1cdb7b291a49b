"""SFace on lfw-dev: alignment / input / test-time variants and score fusion, measured.

Usage::

    .venv/bin/python bench/sface_align.py [--data ../shared/testdata/lfw-dev]
        [--only NAME,...] [--duplicates docs/accuracy/lfw-dev-duplicates.txt]

The fast pipeline's detector (BlazeFace + O-Net) runs once per image (the face nearest the
image centre, as ``facesearch eval`` picks it; a missed face fails its pairs and searches:
strict); each variant then cuts its own chips from those landmarks and embeds every one of
the 4,992 images. Printed for each variant, all strict:

- pairsDevTest accuracy (threshold: best accuracy on pairsDevTrain);
- over every pair of the 4,992 images (3,192 genuine, 12.45 M impostor): FNMR at FMR 1e-3,
  1e-4, 1e-5 and 1e-6;
- open-set 1:N with the harness's split (``facesearch eval identification``, seed 0): FNIR at
  FPIR 1 % and 0.1 %, rank-1; and the same with the probes and gallery entries of the
  documented duplicate identities (``--duplicates``: one person under two names) removed.

Variants: ``arcface`` (shipped: plain similarity warp to the ArcFace 112x112 template, RGB),
``arcface-bgr`` (channels swapped), ``arcface-flip`` (mean of the chip's and its mirror's unit
vectors), ``arcface-zoom0.9`` (template shrunk 10 % about the chip centre: more context),
``dlib-template`` (dlib's mean-face template, padding 0.25, at 112 px), ``fusion`` (the
shipped SFace and the dlib ResNet: mean of the two cosines) and ``fusion-w`` (weights chosen
on pairsDevTrain by best accuracy, then applied unchanged).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.evaluation.calibration_data import pair_score_sets
from facesearch.evaluation.datasets import images_root, labelled_images, read_pairs
from facesearch.evaluation.embeddings import Embeddings, FaceRule, Status, pick_face
from facesearch.evaluation.identification import IdentificationSplit, identify, split_identification
from facesearch.evaluation.verification import best_threshold, pair_scores, verify
from facesearch.vision.align import ARCFACE_TEMPLATE, TEMPLATES, align_faces
from facesearch.vision.decode import load_image
from facesearch.vision.embed import OnnxResNetEmbedder, SFaceEmbedder, l2_normalise
from facesearch.vision.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "testdata" / "lfw-dev"
VARIANTS = ("arcface", "arcface-bgr", "arcface-flip", "arcface-zoom0.9", "dlib-template",
            "fusion", "fusion-w")


def landmarks(paths: list[str]) -> list[tuple[npt.NDArray[np.uint8], np.ndarray] | None]:
    """(image pixels, 5 landmarks) of each image's centre face, or None without a face."""
    det = load_pipeline("fast").detector
    out: list[tuple[npt.NDArray[np.uint8], np.ndarray] | None] = []
    for p in paths:
        img = load_image(p)
        faces = det.detect(img.pixels)
        if not len(faces):
            out.append(None)
            continue
        i = pick_face(faces.boxes, img.width, img.height, FaceRule.CENTRE)
        out.append((img.pixels, faces.landmarks[i]))
    return out


def chips(found: list[tuple[npt.NDArray[np.uint8], np.ndarray] | None], size: int,
          padding: float, template: str) -> npt.NDArray[np.uint8]:
    out = np.zeros((len(found), size, size, 3), np.uint8)
    for k, f in enumerate(found):
        if f is not None:
            out[k] = align_faces(f[0], f[1][None], size, padding, template)[0]
    return out


def fnmr_at_fmr(emb: Embeddings, labels: list[str]) -> dict[float, float]:
    imp, gen = pair_score_sets(emb, labels)
    n_fail = int((~emb.found).sum())
    imp.sort()
    out = {}
    for fmr in (1e-3, 1e-4, 1e-5, 1e-6):
        k = max(1, int(round(fmr * len(imp))))
        t = imp[len(imp) - k]
        out[fmr] = float(np.mean(gen <= t)) if not n_fail else float("nan")
    return out


def as_embeddings(paths: list[str], vectors: np.ndarray, ok: np.ndarray,
                  name: str) -> Embeddings:
    status = np.where(ok, Status.FOUND, Status.NO_FACE).astype(np.int8)
    vectors = np.where(ok[:, None], vectors, 0.0).astype(np.float32)
    return Embeddings(tuple(paths), vectors, status, ok.astype(np.int64), "fast",
                         f"bench-{name}/sface-2021dec", FaceRule.CENTRE)


def top_non_mated(split: IdentificationSplit, e: Embeddings, k: int = 8) -> None:
    """The ``k`` non-mated searches with the highest best-candidate cosine."""
    idx = e.index()
    g = np.array([idx[p] for p in split.gallery])
    nm = np.array([idx[p] for p in split.non_mated])
    s = e.vectors[nm] @ e.vectors[g].T
    best = s.argmax(1)
    order = np.argsort(-s[np.arange(len(nm)), best])[:k]
    for r in order:
        print(f"  non-mated {Path(split.non_mated[r]).name} -> "
              f"{Path(split.gallery[best[r]]).name}: cosine {s[r, best[r]]:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--duplicates", type=Path,
                    default=ROOT / "docs" / "accuracy" / "lfw-dev-duplicates.txt")
    args = ap.parse_args()
    root = images_root(args.data)
    people = labelled_images(root)
    paths = [p for ps in people.values() for p in ps]
    labels = [n for n, ps in people.items() for _ in ps]
    t0 = time.perf_counter()
    found = landmarks(paths)
    ok = np.array([f is not None for f in found])
    print(f"detected {ok.sum()}/{len(ok)} in {time.perf_counter() - t0:.0f} s")
    train = read_pairs(args.data / "pairsDevTrain.txt")
    test = read_pairs(args.data / "pairsDevTest.txt")
    split = split_identification(people, seed=0)
    dup_names: set[str] = set()
    if args.duplicates.is_file():
        for line in args.duplicates.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                dup_names.update(line.split())
    sface = SFaceEmbedder()
    cache: dict[str, np.ndarray] = {}

    def vectors(name: str) -> np.ndarray:
        if name in cache:
            return cache[name]
        if name == "arcface":
            v = sface.embed(chips(found, 112, 0.0, "arcface"))
        elif name == "arcface-bgr":
            v = sface.embed(np.ascontiguousarray(chips(found, 112, 0.0, "arcface")[..., ::-1]))
        elif name == "arcface-flip":
            c = chips(found, 112, 0.0, "arcface")
            v = l2_normalise(vectors("arcface") + sface.embed(np.ascontiguousarray(
                c[:, :, ::-1])))
        elif name == "arcface-zoom0.9":
            TEMPLATES["arcface-zoom0.9"] = (0.5 + 0.9 * (ARCFACE_TEMPLATE - 0.5)).astype(
                np.float32)
            v = sface.embed(chips(found, 112, 0.0, "arcface-zoom0.9"))
        elif name == "dlib-template":
            v = sface.embed(chips(found, 112, 0.25, "dlib"))
        elif name == "dlib":
            v = OnnxResNetEmbedder().embed(chips(found, 150, 0.25, "dlib"))
        else:
            raise ValueError(name)
        cache[name] = v
        return v

    def fused(w: float) -> np.ndarray:
        # cos_f = w * cos_s + (1 - w) * cos_d, as one unit vector: [sqrt(w) s, sqrt(1-w) d].
        return np.concatenate([np.sqrt(w) * vectors("arcface"),
                               np.sqrt(1 - w) * vectors("dlib")], axis=1)

    for name in args.only.split(","):
        t0 = time.perf_counter()
        if name == "fusion":
            v = fused(0.5)
        elif name == "fusion-w":
            best = (-1.0, 0.5)
            for w in np.linspace(0.3, 1.0, 15):
                e = as_embeddings(paths, fused(float(w)), ok, name)
                s, _ = pair_scores(train, e, root)
                t = best_threshold(s, train.same)
                acc = float(np.mean((s >= t) == train.same))
                best = max(best, (acc, float(w)))
            print(f"fusion-w: weight of SFace {best[1]:.2f} (pairsDevTrain accuracy "
                  f"{best[0] * 100:.2f} %)")
            v = fused(best[1])
        else:
            v = vectors(name)
        e = as_embeddings(paths, v, ok, name)
        res = verify(test, e, root, train=train)
        rates = fnmr_at_fmr(e, labels)
        ident = identify(split, e)
        keep = [i for i, lab in enumerate(split.gallery_labels) if lab not in dup_names]
        mated = [i for i, lab in enumerate(split.mated_labels) if lab not in dup_names]
        non_mated = [p for p in split.non_mated if Path(p).parent.name not in dup_names]
        clean = IdentificationSplit(
            tuple(split.gallery[i] for i in keep), tuple(split.gallery_labels[i] for i in keep),
            sum(1 for i in keep if i < split.enrolled), tuple(split.mated[i] for i in mated),
            tuple(split.mated_labels[i] for i in mated), tuple(non_mated), split.seed)
        ident2 = identify(clean, e)
        f = {x.fpir: x.fnir for x in ident.fnir}
        f2 = {x.fpir: x.fnir for x in ident2.fnir}
        if name == "arcface":
            top_non_mated(split, e)
        print(f"{name:16s} pairsDevTest {res.accuracy:.2f} % | "
              + " ".join(f"FNMR@FMR{k:g} {r:.4f}" for k, r in rates.items())
              + f" | FNIR@FPIR1% {f[0.01]:.4f} @0.1% {f[0.001]:.4f} rank1 {ident.rank(1):.4f}"
              + f" | w/o duplicates FNIR@1% {f2[0.01]:.4f} @0.1% {f2[0.001]:.4f}"
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
