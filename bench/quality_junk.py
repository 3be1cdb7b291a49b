"""Faces versus junk: the figures the AUTO quality bars and the recognisability score come from.

Mines, from lfw-dev and the test clip, populations of detections and measures for each: the
detector's score, MTCNN O-Net's face probability, the quality measures (inter-ocular px,
sharpness, brightness, pose) and the embedding's cosine to the centroid of "unrecognisable
identity" embeddings (Deng et al.'s UI centroid, ERS score).

Populations (identities split in two halves by name: half A builds the centroid, half B is
measured, so no image is both):

- ``real``: the face nearest the centre of an lfw-dev photo (half B).
- ``offcentre``: the other detections in those photos (bystanders, cut-off faces, and junk).
- ``background``: detections in the four corners of lfw-dev photos (100x100 px, enlarged 3x)
  with the photo's own face outside the patch: backdrop patterns, logos, cut-off heads. Mined
  with BlazeFace's score threshold lowered to 0.3 so the distribution shows what the default
  0.5 keeps.
- ``text``: detections on rendered text and logo marks ("(R)", "OO", letters, circles) over a
  blurred, enlarged corner of an lfw-dev photo, same lowered threshold.
- ``tiny_<iod>``: lfw-dev faces (half B) pasted at inter-ocular 8/12/16/20/24 px into a
  640x480 darkened background (the detection matching the pasted face).
- ``crowd``: the detections of the test clip's audience shot (frames after 7.2 s).

Half A's faces made unrecognisable (aligned chips shrunk so the eyes are 3-6 px apart and
enlarged back, or blurred with sigma 6-10 px) give the "unrecognisable" anchor of the
recognisability score (:mod:`facesearch.vision.recognisability`: the raw descriptor's norm)
and, with half A's background and text detections, the unrecognisable-identity centroid of
Deng et al.'s ERS, measured here as the alternative (``cosUI`` columns).

    .venv/bin/python bench/quality_junk.py --images 300 --out /tmp/quality_junk.npz \
        [--write-anchors src/facesearch/data/recognisability.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "testdata"
LFW = DATA / "lfw-dev" / "images"
TEXTS = ("(R)", "OO", "O O", "(C)", "TM", "8", "oo", "@", "e e", "QUO", "COCO", "Go", "00",
         "ROOM", "( o o )", "SOS")


def read(path: Path) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def halves(n: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """One photo per identity, identities alternately in half A and B, ``n`` photos each."""
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    rng.shuffle(people)  # type: ignore[arg-type]
    a, b = [], []
    for i, p in enumerate(people):
        files = sorted(p.glob("*.jpg"))
        (a if i % 2 == 0 else b).append(files[0])
    return a[:n], b[:n]


class Measurer:
    def __init__(self) -> None:
        from facesearch.vision.detect import BlazeFaceDetector
        from facesearch.vision.mtcnn import onet_boxes, onet_run
        from facesearch.vision.pipeline import Pipeline, load_pipeline

        base = load_pipeline("fast", threads=1)
        self.pipe = base
        self.mine = Pipeline(BlazeFaceDetector(score_threshold=0.3, threads=1, min_face=8.0),
                             base.embedder)
        self._onet = base.detector._onet  # type: ignore[attr-defined]
        self._onet_run, self._onet_boxes = onet_run, onet_boxes
        self.rows: dict[str, list[list[float]]] = {}
        self.vectors: dict[str, list[npt.NDArray[np.float32]]] = {}
        self.ui_norms: list[float] = []

    def faces(self, pixels: npt.NDArray[np.uint8], mine: bool = False):  # noqa: ANN201
        from facesearch.types import Image

        img = Image(np.ascontiguousarray(pixels), "x", "RAW")
        pipe = self.mine if mine else self.pipe
        faces = pipe.analyze(img)
        onet = (self._onet_run(self._onet, img.pixels, self._onet_boxes(faces.boxes))[1]
                if len(faces) else np.zeros(0, np.float32))
        # The embedder's raw descriptor norm (before L2 normalisation), a quality signal.
        self._norms = (np.linalg.norm(pipe.embedder.descriptors(pipe.chips(img, faces)), axis=1)
                       if len(faces) else np.zeros(0, np.float32))
        return faces, onet

    def add(self, pop: str, faces, onet, idx) -> None:  # noqa: ANN001
        q = faces.quality
        for i in idx:
            self.rows.setdefault(pop, []).append([
                float(faces.scores[i]), float(onet[i]), float(q.size[i]), float(q.sharpness[i]),
                float(q.brightness[i]), float(q.yaw[i]), float(q.pitch[i]), float(q.roll[i]),
                float(self._norms[i])])
            self.vectors.setdefault(pop, []).append(faces.embeddings[i])


ANCHOR_METHOD = (
    "recognisability = 100 * (n - norm_unrecognisable) / (norm_recognisable - "
    "norm_unrecognisable), clipped to 0-100, n the L2 norm of the embedder's raw descriptor. "
    "norm_unrecognisable: median norm of lfw-dev faces (half A of the identities) shrunk to 3-6 "
    "px between the eyes and enlarged back, or blurred with sigma 6-10 px; norm_recognisable: "
    "median norm of the central faces of lfw-dev photos (half B).")
COLUMNS = ("score", "onet", "iod", "sharpness", "brightness", "yaw", "pitch", "roll", "norm")


def central(faces, w: int, h: int) -> int | None:  # noqa: ANN001
    if not len(faces):
        return None
    c = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    d = np.linalg.norm(c - [w / 2, h / 2], axis=1)
    i = int(np.argmin(d))
    return i if d[i] < 40 else None


def mine_photo(m: Measurer, path: Path, real: bool, rng: np.random.Generator) -> None:
    px = read(path)
    h, w = px.shape[:2]
    if real:
        faces, onet = m.faces(px)
        c = central(faces, w, h)
        m.add("real", faces, onet, [] if c is None else [c])
        m.add("offcentre", faces, onet, [i for i in range(len(faces)) if i != c])
    for x0, y0 in ((0, 0), (150, 0), (0, 150), (150, 150)):
        patch = cv2.resize(px[y0:y0 + 100, x0:x0 + 100], (300, 300), interpolation=cv2.INTER_CUBIC)
        faces, onet = m.faces(patch, mine=True)
        m.add("background" if real else "ui_background", faces, onet, range(len(faces)))
    # A corner of the photo (no face of its own subject), enlarged and blurred, as backdrop.
    bg = cv2.GaussianBlur(cv2.resize(px[:80, :80], (480, 480)), (0, 0), 4)
    for _ in range(2):
        text = TEXTS[rng.integers(len(TEXTS))]
        scale = float(rng.uniform(1.5, 4.0))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.putText(bg, text, (int(rng.integers(10, 200)), int(rng.integers(100, 450))),
                    int(rng.integers(0, 8)), scale, colour, int(rng.integers(2, 9)))
        if rng.random() < 0.5:
            cv2.circle(bg, (int(rng.integers(60, 420)), int(rng.integers(60, 420))),
                       int(rng.integers(10, 60)), colour, int(rng.integers(2, 8)))
    faces, onet = m.faces(bg, mine=True)
    m.add("text" if real else "ui_text", faces, onet, range(len(faces)))


def mine_tiny(m: Measurer, path: Path, rng: np.random.Generator) -> None:
    px = read(path)
    faces, _ = m.faces(px)
    c = central(faces, 250, 250)
    if c is None:
        return
    iod0 = float(np.linalg.norm(faces.landmarks[c, 1] - faces.landmarks[c, 0]))
    bg = read(path)
    canvas = (cv2.resize(cv2.GaussianBlur(bg, (0, 0), 4), (1280, 480)) * 0.5).astype(np.uint8)
    x0s = []
    x0 = 20
    for iod in (8, 12, 16, 20, 24):
        s = iod / iod0
        small = cv2.resize(px, (max(4, round(250 * s)),) * 2, interpolation=cv2.INTER_AREA)
        canvas[160:160 + small.shape[0], x0:x0 + small.shape[1]] = small
        x0s.append(x0)
        x0 += small.shape[1] + 20
    found, onet = m.faces(canvas)
    for k, iod in enumerate((8, 12, 16, 20, 24)):
        s = iod / iod0
        expect = faces.landmarks[c] * s + [x0s[k], 160]
        if not len(found):
            continue
        d = np.linalg.norm(found.landmarks - expect, axis=2).mean(1)
        j = int(np.argmin(d))
        if d[j] < 0.5 * iod:
            m.add(f"tiny_{iod}", found, onet, [j])


def mine_clip(m: Measurer) -> None:
    import av

    with av.open(str(DATA / "faces" / "short_hamilton_clip.mp4")) as box:
        for k, frame in enumerate(box.decode(video=0)):
            t = float(frame.pts * frame.time_base)
            if t < 7.2 or k % 3:
                continue
            faces, onet = m.faces(frame.to_ndarray(format="rgb24"))
            m.add("crowd", faces, onet, range(len(faces)))


def ui_chips(m: Measurer, paths: list[Path], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Embeddings of half A's faces made unrecognisable (see the module's docstring)."""
    from facesearch.types import Image

    out = []
    for path in paths:
        img = Image(read(path), "x", "RAW")
        faces = m.pipe.detect(img)
        c = central(faces, 250, 250)
        if c is None:
            continue
        chip = m.pipe.chips(img, faces[[c]])[0]
        s = chip.shape[0]
        variants = []
        for iod in (3, 4, 6):  # the chip's eyes are about 0.35 s apart
            k = max(2, round(s * iod / (0.35 * s)))
            small = cv2.resize(chip, (k, k), interpolation=cv2.INTER_AREA)
            variants.append(cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR))
        for sigma in (6.0, 10.0):
            variants.append(cv2.GaussianBlur(chip, (0, 0), sigma))
        raw = m.pipe.embedder.descriptors(np.stack(variants))
        m.ui_norms.extend(np.linalg.norm(raw, axis=1).tolist())
        out.append(m.pipe.embedder.embed(np.stack(variants)))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--write-anchors", type=Path,
                    help="write the recognisability anchors (src/facesearch/data/"
                         "recognisability.json)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    a, b = halves(args.images)
    m = Measurer()
    t0 = time.time()
    for p in b:
        mine_photo(m, p, True, rng)
    for p in b[: max(1, len(b) // 2)]:
        mine_tiny(m, p, rng)
    mine_clip(m)
    for p in a[: len(a) // 2]:
        mine_photo(m, p, False, rng)
    ui = ui_chips(m, a, rng)
    print(f"mined in {time.time() - t0:.0f} s", file=sys.stderr)
    ui_junk = [v for k in ("ui_background", "ui_text") for v in m.vectors.get(k, [])]
    allui = np.concatenate([ui, np.array(ui_junk, np.float32).reshape(-1, ui.shape[1])])
    centroid = allui.mean(0)
    centroid /= np.linalg.norm(centroid)
    save = {f"rows_{k}": np.array(v, np.float32) for k, v in m.rows.items()}
    save |= {f"vec_{k}": np.array(v, np.float32) for k, v in m.vectors.items()}
    save["ui"] = allui
    save["ui_norms"] = np.array(m.ui_norms, np.float32)
    save["centroid"] = centroid.astype(np.float32)
    np.savez(args.out, **save)
    for k, rows in m.rows.items():
        r = np.array(rows)
        cos = np.array(m.vectors[k]) @ centroid
        print(f"{k:14s} n={len(r):4d} " + " ".join(
            f"{c}={np.percentile(r[:, j], 50):.2f}" for j, c in enumerate(COLUMNS)
            if c in ("score", "onet", "iod", "sharpness", "norm"))
            + f" cosUI p5/50/95={np.percentile(cos, 5):.3f}/{np.median(cos):.3f}/"
              f"{np.percentile(cos, 95):.3f}")
    uic = allui @ centroid
    print(f"ui chips n={len(allui)} cosUI p5/50/95={np.percentile(uic, 5):.3f}/"
          f"{np.median(uic):.3f}/{np.percentile(uic, 95):.3f}")
    nu = float(np.median(save["ui_norms"]))
    nr = float(np.median(save["rows_real"][:, COLUMNS.index("norm")]))
    print(f"norm anchors: unrecognisable (median of UI chips) {nu:.3f}, recognisable (median "
          f"of real faces) {nr:.3f}")
    if args.write_anchors:
        args.write_anchors.write_text(json.dumps({
            "format": 2, "method": ANCHOR_METHOD, "command": " ".join(["bench/quality_junk.py",
                                                                       *sys.argv[1:]]),
            "embedders": {m.pipe.embedder.name: {"norm_unrecognisable": round(nu, 3),
                                                 "norm_recognisable": round(nr, 3)}}},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
