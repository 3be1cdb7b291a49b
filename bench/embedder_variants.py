"""Embedder variants: static int8 quantisation and flip test-time augmentation, measured.

Usage::

    .venv/bin/python bench/embedder_variants.py [--data DIR] [--calib 512] [--rounds 5]
        [--only NAME,...] [--no-timing]
    .venv/bin/python bench/embedder_variants.py --write-ranges FILE

Chips: the fast pipeline (BlazeFace + O-Net, ``load_pipeline("fast")``) cuts one chip per
image, the face nearest the image centre (the LFW rule of ``facesearch eval``), for every
image named in lfw-dev's ``pairsDevTrain.txt`` (calibration and threshold) and
``pairsDevTest.txt`` (evaluation); the two sets share no person. An image without a face
fails its pairs (strict). Chips are cached in ``$FACESEARCH_CACHE/bench``.

Variants (every int8 one calibrated ONLY on train chips):

- ``fp32``, ``fp32 + flip``: the shipped fp32 model, without and with flip TTA;
- ``int8 shipped`` (``+ flip``): :mod:`facesearch.vision.convert.resnet_int8`, the QDQ rewrite with
  the shipped MinMax ranges (``--write-ranges``);
- ``ort ...``: ``onnxruntime.quantization.quantize_static`` on a seeded sample of ``--calib``
  train chips: QDQ or QOperator, per-channel s8 weights, u8 activations unless said,
  MinMax / Percentile / Entropy calibration, ``reduce_range``, only Conv quantised, or all
  ops. Except "all ops", the first Conv and the final MatMul are in ``nodes_to_exclude``
  (ONNX Runtime's optimiser still runs that Conv as QLinearConv, its input and output being
  quantised).

Measured for each, in the same process (``--only`` runs fp32 and the named ones):

- LFW pairsDevTest accuracy (strict; threshold chosen on pairsDevTrain), its binomial
  standard error, the threshold (similarity and cosine) and the ROC AUC on the test pairs;
- agreement with fp32: cosine of the two unit vectors of every test chip (min, 1st
  percentile, mean), the change of each test pair's cosine, and the test pairs whose
  decision changes at fp32's threshold;
- the similarity scale: FMR over all different-person pairs of the test images (and FNMR
  over all their same-person pairs) at similarity 80, 90, 95 and 99;
- speed: ms per face, batch 1 and 32, 1 and 2 intra-op threads: median wall time over
  ``--rounds`` (and in brackets this process's CPU time, less disturbed by other load).

``--write-ranges FILE`` measures the shipped int8 model's activation ranges on the same
seeded ``--calib`` train chips and writes them (how ``src/facesearch/data/dlib-resnet-v1-int8.json``
was made: 512 chips, chosen over 256, 1,024 and all 3,443 by agreement with fp32 on train
chips outside every sample).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from facesearch.evaluation.datasets import pair_images, read_pairs
from facesearch.evaluation.embeddings import Embeddings, FaceRule, Status
from facesearch.evaluation.verification import best_threshold, pair_scores, verify
from facesearch.vision import similarity as sim
from facesearch.vision.convert.dlib_resnet import build_resnet_onnx, dlib_resnet_dat_path
from facesearch.vision.embed import OnnxResNetEmbedder
from facesearch.vision.modelcache import cache_dir

Chips = npt.NDArray[np.uint8]
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "testdata" / "lfw-dev"
SIMILARITIES = (80.0, 90.0, 95.0, 99.0)
TIMING_CHIPS = 64


# -- chips ------------------------------------------------------------------------------------

@dataclass
class ChipSet:
    paths: list[str]
    chips: Chips
    ok: npt.NDArray[np.bool_]


def cut_chips(data: Path) -> dict[str, ChipSet]:
    """Centre-face chips of every image of pairsDevTrain and pairsDevTest (cached)."""
    from facesearch.errors import FaceSearchError
    from facesearch.evaluation.embeddings import pick_face
    from facesearch.vision.decode import load_image
    from facesearch.vision.pipeline import load_pipeline

    root = data / "images"
    store = cache_dir().parent / "bench"
    store.mkdir(parents=True, exist_ok=True)
    out: dict[str, ChipSet] = {}
    pipeline = None
    for split in ("train", "test"):
        pairs = read_pairs(data / f"pairsDev{split.title()}.txt")
        paths = pair_images([pairs], root)
        cached = store / f"lfw-dev-{split}-fast-chips.npz"
        if cached.is_file():
            with np.load(cached) as z:
                if list(z["paths"]) == paths:
                    out[split] = ChipSet(paths, z["chips"], z["ok"])
                    continue
        if pipeline is None:
            pipeline = load_pipeline("fast", threads=1, device="cpu")
        chips = np.zeros((len(paths), 150, 150, 3), np.uint8)
        ok = np.zeros(len(paths), bool)
        for i, path in enumerate(paths):
            try:
                image = load_image(Path(path).read_bytes())
            except (OSError, FaceSearchError):
                continue
            faces = pipeline.detector.detect(image.pixels)
            if len(faces):
                j = pick_face(faces.boxes, image.width, image.height, FaceRule.CENTRE)
                chips[i] = pipeline.chips(image, faces[j:j + 1])[0]
                ok[i] = True
        np.savez(cached, paths=np.array(paths), chips=chips, ok=ok)
        out[split] = ChipSet(paths, chips, ok)
    return out


# -- int8 variants made with onnxruntime.quantization (the study) ------------------------------

def ort_quantize(fp32: bytes, calib: Chips, *, method: str = "minmax", fmt: str = "qdq",
                 skip_ends: bool = True, ops: list[str] | None = None,
                 reduce_range: bool = False, act: str = "u8",
                 extra: dict[str, object] | None = None) -> bytes:
    """``fp32`` statically quantised by ``onnxruntime.quantization.quantize_static``:
    per-channel int8 weights, activations calibrated on ``calib`` with ``method``."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = [calib[i:i + 16] for i in range(0, len(calib), 16)]
            self.set_range(0, len(self.batches))

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict[str, Chips] | None:
            b = next(self.it, None)
            return None if b is None else {"chips": b}

    model = onnx.load_from_string(fp32)
    exclude = [model.graph.node[i].name for i, n in enumerate(model.graph.node)
               if n.op_type == "Conv"][:1] + [model.graph.node[-1].name] if skip_ends else []
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    options: dict[str, object] = {"CalibStridedMinMax": 4}  # 64 chips per collection
    options.update(extra or {})
    calib = calib[:len(calib) - len(calib) % 64]
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(
            src, dst, Reader(),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=ops, per_channel=True, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            calibrate_method=methods[method], extra_options=options)
        return dst.read_bytes()


# -- measurement --------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str
    model: bytes
    flip: bool = False


@dataclass
class Row:
    name: str
    accuracy: float
    sem: float
    threshold: float
    """Similarity threshold chosen on the train pairs."""
    cosine: float
    """The same threshold as a cosine."""
    auc: float
    agree: npt.NDArray[np.float64]
    """Per test chip: cosine between this variant's vector and fp32's."""
    pair_change: npt.NDArray[np.float64]
    """Per test pair: |cosine - fp32's cosine|."""
    changed: int
    """Test pairs whose decision at fp32's threshold differs from fp32's."""
    at_ref: float
    """Test accuracy (strict) at fp32's threshold: the model's change without the noise of
    choosing a threshold."""
    fmr: list[float]
    fnmr: list[float]
    seconds: float


def embedder(variant: Variant, threads: int = 1, batch: int = 32) -> OnnxResNetEmbedder:
    """The package's embedder running ``variant`` (its ``flip`` option included)."""
    return OnnxResNetEmbedder(threads=threads, device="cpu", batch_size=batch,
                              model=variant.model, flip=variant.flip)


def embeddings(sets: dict[str, ChipSet], vectors: dict[str, npt.NDArray[np.float32]],
               name: str) -> Embeddings:
    """Train and test vectors as the evaluation harness's per-image embeddings."""
    paths = sets["train"].paths + sets["test"].paths
    ok = np.concatenate([sets["train"].ok, sets["test"].ok])
    v = np.concatenate([vectors["train"], vectors["test"]])
    v[~ok] = 0
    status = np.where(ok, Status.FOUND, Status.NO_FACE).astype(np.int8)
    return Embeddings(paths=tuple(paths), vectors=v, status=status, faces=ok.astype(np.int64),
                      method="fast", model_version=name, rule=FaceRule.CENTRE)


def auc(genuine: npt.NDArray[np.float64], impostor: npt.NDArray[np.float64]) -> float:
    """P(genuine score > impostor score), ties counted half (Mann-Whitney)."""
    both = np.concatenate([genuine, impostor])
    order = np.argsort(both, kind="stable")
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks = np.empty(len(both))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    g = len(genuine)
    return float((ranks[:g].sum() - g * (g + 1) / 2.0) / (g * len(impostor)))


def all_pairs(sets: dict[str, ChipSet]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                                 npt.NDArray[np.bool_]]:
    """Every pair of test images with a face: (i, j, same person)."""
    ok = np.flatnonzero(sets["test"].ok)
    people = np.array([Path(sets["test"].paths[k]).parent.name for k in ok])
    i, j = np.triu_indices(len(ok), 1)
    return ok[i], ok[j], people[i] == people[j]


def rates(vectors: npt.NDArray[np.float32],
          pairs: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]
          ) -> tuple[list[float], list[float]]:
    """FMR at each of SIMILARITIES over every different-person pair of test images, FNMR
    over every same-person pair."""
    i, j, same = pairs
    v = vectors.astype(np.float64)
    cos = np.einsum("ij,ij->i", v[i], v[j])
    imp, gen = cos[~same], cos[same]
    cuts = [float(sim.to_cosine(s)) for s in SIMILARITIES]
    return [float(np.mean(imp >= c)) for c in cuts], [float(np.mean(gen < c)) for c in cuts]


def ms_per_face(run: Callable[[Chips], object], chips: Chips, batch: int,
                rounds: int) -> str:
    """Median over ``rounds`` of the wall (and CPU) ms per face to embed ``chips``,
    ``batch`` at a time, formatted ``"wall (cpu)"``."""
    batches = [chips[i:i + batch] for i in range(0, len(chips), batch)]
    run(batches[0])  # warm-up
    wall, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        for b in batches:
            run(b)
        wall.append((time.perf_counter() - t) / len(chips) * 1e3)
        cpu.append((time.process_time() - c) / len(chips) * 1e3)
    return f"{statistics.median(wall):.2f} ({statistics.median(cpu):.2f})"


def timing(variant: Variant, chips: Chips, rounds: int) -> list[str]:
    return [ms_per_face(embedder(variant, threads, batch).embed, chips, batch, rounds)
            for threads in (1, 2) for batch in (1, 32)]


Build = Callable[[], Variant]


def variants(fp32: bytes, calib: Chips) -> list[tuple[str, Build]]:
    """(name, builder) of every variant, fp32 first; models are built only when run."""
    from facesearch.vision.convert.resnet_int8 import build_resnet_int8_onnx

    def v(name: str, make: Callable[[], bytes], flip: bool = False) -> tuple[str, Build]:
        return name, lambda: Variant(name, make(), flip)

    def q(**kw: object) -> Callable[[], bytes]:
        return lambda: ort_quantize(fp32, calib, **kw)  # type: ignore[arg-type]

    def int8() -> bytes:
        return build_resnet_int8_onnx(fp32)

    return [
        v("fp32", lambda: fp32),
        v("fp32 + flip", lambda: fp32, True),
        v("int8 shipped", int8),
        v("int8 shipped + flip", int8, True),
        v("ort qdq minmax", q()),
        v("ort qdq minmax all ops", q(skip_ends=False)),
        v("ort qdq minmax conv only", q(ops=["Conv"])),
        v("ort qdq minmax reduce_range", q(reduce_range=True)),
        v("ort qdq minmax s8 act", q(act="s8")),
        v("ort qdq percentile 99.999", q(method="percentile")),
        v("ort qdq entropy", q(method="entropy")),
        v("ort qoperator minmax", q(fmt="qop")),
    ]


def report(sets: dict[str, ChipSet], data: Path, builds: list[tuple[str, Build]],
           rounds: int, do_timing: bool) -> None:
    root = data / "images"
    train = read_pairs(data / "pairsDevTrain.txt")
    test = read_pairs(data / "pairsDevTest.txt")
    ok = sets["test"].ok
    step = max(1, int(ok.sum()) // TIMING_CHIPS)
    timing_chips = np.ascontiguousarray(sets["test"].chips[ok][::step][:TIMING_CHIPS])
    pairs = all_pairs(sets)
    ref: npt.NDArray[np.float32] | None = None
    ref_scores = np.zeros(0)
    ref_cos = 0.0
    rows: list[Row] = []
    speed: list[tuple[str, list[str]]] = []
    for _, build in builds:
        v = build()
        t = time.perf_counter()
        e = embedder(v)
        vec = {k: e.embed(s.chips) for k, s in sets.items()}
        seconds = time.perf_counter() - t
        emb = embeddings(sets, vec, v.name)
        res = verify(test, emb, root, train=train)
        tr_scores, tr_ok = pair_scores(train, emb, root)
        cos_t = best_threshold(tr_scores[tr_ok], train.same[tr_ok])
        scores, _ = pair_scores(test, emb, root)
        if ref is None:
            ref, ref_scores, ref_cos = vec["test"], scores, cos_t
        fin = np.isfinite(scores) & np.isfinite(ref_scores)
        fmr, fnmr = rates(vec["test"], pairs)
        r = Row(v.name, res.accuracy, res.accuracy_sem, res.threshold, cos_t,
                auc(scores[test.same], scores[~test.same]),
                (vec["test"][ok] * ref[ok]).sum(1).astype(np.float64),
                np.abs(scores[fin] - ref_scores[fin]),
                int(np.sum((scores >= ref_cos) != (ref_scores >= ref_cos))),
                100.0 * float(np.mean((scores >= ref_cos) == test.same)), fmr, fnmr, seconds)
        rows.append(r)
        print(f"{r.name:<28} acc {r.accuracy:.2f} % (se {r.sem:.2f}) threshold {r.threshold:.2f}"
              f" (cos {r.cosine:.4f}) AUC {r.auc:.5f}, acc at fp32's threshold {r.at_ref:.2f} %"
              " | vs fp32: chip cos min "
              f"{r.agree.min():.5f} p1 {np.percentile(r.agree, 1):.5f} mean {r.agree.mean():.6f}"
              f", pair |dcos| mean {r.pair_change.mean():.4f} max {r.pair_change.max():.4f}, "
              f"{r.changed} decisions changed | FMR " + " ".join(f"{x:.2e}" for x in fmr)
              + " FNMR " + " ".join(f"{x:.4f}" for x in fnmr) + f" | {seconds:.0f} s",
              flush=True)
        if do_timing:
            speed.append((v.name, timing(v, timing_chips, rounds)))
            print(f"{'':<28} ms/face wall (cpu): 1 thread b1 {speed[-1][1][0]} b32 "
                  f"{speed[-1][1][1]}; 2 threads b1 {speed[-1][1][2]} b32 {speed[-1][1][3]}"
                  f"  [load {' '.join(f'{x:.2f}' for x in os.getloadavg())}]", flush=True)

    same = pairs[2]
    print()
    print(f"LFW pairsDevTest (strict, threshold chosen on pairsDevTrain), fast-pipeline chips; "
          f"agreement with fp32 over the {int(ok.sum())} test chips and {len(test)} test pairs; "
          f"FMR over all {int((~same).sum()):,} different-person pairs and FNMR over all "
          f"{int(same.sum()):,} same-person pairs of the test images")
    print()
    print("| variant | accuracy | threshold: similarity (cosine) | AUC | accuracy at fp32's "
          "threshold | cosine to fp32 per "
          "chip: min / 1st pct / mean | pair cosine change: mean / max | decisions changed | "
          "FMR at " + " / ".join(f"{s:g}" for s in SIMILARITIES) + " | FNMR at "
          + " / ".join(f"{s:g}" for s in SIMILARITIES) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.accuracy:.2f} % +- {r.sem:.2f} | {r.threshold:.2f} "
              f"({r.cosine:.4f}) | {r.auc:.4f} | {r.at_ref:.2f} % | {r.agree.min():.5f} / "
              f"{np.percentile(r.agree, 1):.5f} / {r.agree.mean():.5f} | "
              f"{r.pair_change.mean():.4f} / {r.pair_change.max():.4f} | {r.changed} | "
              + " / ".join(f"{x:.3g}" for x in r.fmr) + " | "
              + " / ".join(f"{100 * x:.1f} %" for x in r.fnmr) + " |")
    if speed:
        print()
        print(f"ms per face, wall (cpu), median of {rounds} rounds over {len(timing_chips)} "
              "test chips")
        print()
        print("| variant | 1 thread, batch 1 | 1 thread, batch 32 | 2 threads, batch 1 | "
              "2 threads, batch 32 |")
        print("|---|---|---|---|---|")
        for name, cells in speed:
            print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="lfw-dev folder")
    ap.add_argument("--calib", type=int, default=512,
                    help="train chips the ORT variants calibrate on (multiple of 64)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per figure")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--write-ranges", type=Path, default=None,
                    help="calibrate the shipped int8 model on all train chips, write FILE")
    args = ap.parse_args()

    sets = cut_chips(args.data)
    fp32 = build_resnet_onnx(dlib_resnet_dat_path())
    train_chips = sets["train"].chips[sets["train"].ok]
    rng = np.random.default_rng(0)
    calib = train_chips[np.sort(rng.choice(len(train_chips), args.calib, replace=False))]
    if args.write_ranges is not None:
        from facesearch.vision.convert.resnet_int8 import calibrate_ranges, write_ranges

        write_ranges(args.write_ranges, calibrate_ranges(fp32, calib), fp32,
                     source=f"fast-pipeline chips (centre face) of {len(calib)} of the "
                            f"{len(train_chips)} lfw-dev images named in pairsDevTrain.txt, "
                            "sampled with numpy default_rng(0)")
        print(f"wrote {args.write_ranges} ({len(calib)} train chips)")
        return
    builds = variants(fp32, calib)
    if args.only is not None:
        only = [s.strip() for s in args.only.split(",")]
        unknown = set(only) - {n for n, _ in builds}
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}; choose from "
                             f"{', '.join(n for n, _ in builds)}")
        builds = [b for b in builds if b[0] in only or b[0] == "fp32"]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; chips: train "
          f"{int(sets['train'].ok.sum())}/{len(sets['train'].ok)}, test "
          f"{int(sets['test'].ok.sum())}/{len(sets['test'].ok)} with a face; ORT variants "
          f"calibrated on {len(calib)} train chips (seed 0)")
    report(sets, args.data, builds, args.rounds, not args.no_timing)


if __name__ == "__main__":
    main()
