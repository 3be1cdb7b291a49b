"""Risk per probe quality band and FNIR per degradation on lfw-dev
(:mod:`facesearch.evaluation.quality_bands`); writes the shipped per-band calibration.

    .venv/bin/python bench/quality_bands.py --people 400 \
        [--write src/facesearch/data/calibration/bands/sface-2021dec.json] [--flip]

Prints, per degradation: probes, failures to detect, median recognisability, the cosine for
FPIR 1 % and FNIR there; per band: probes, impostor pairs, FMR at a few thresholds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from facesearch.evaluation.quality_bands import (
    band_of,
    calibrate_bands,
    embed_degraded,
    fnir_by_degradation,
    people,
)
from facesearch.governance.bands import BANDS
from facesearch.vision import similarity as sim
from facesearch.vision.pipeline import load_pipeline

LFW = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "lfw-dev" / "images"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--probes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--write", type=Path)
    ap.add_argument("--save-embeddings", type=Path)
    args = ap.parse_args()
    pipe = load_pipeline("fast", threads=1, flip=args.flip)
    t0 = time.time()
    data = embed_degraded(pipe, people(LFW, args.people, args.seed),
                          probes_per_person=args.probes)
    print(f"embedded {len(data.probes)} probes, {len(data.gallery)} gallery entries in "
          f"{time.time() - t0:.0f} s ({pipe.model_version})", file=sys.stderr)
    if args.save_embeddings:
        np.savez(args.save_embeddings, gallery=data.gallery, gallery_person=data.gallery_person,
                 probes=data.probes, probe_person=data.probe_person,
                 probe_degradation=np.array(data.probe_degradation),
                 probe_recognisability=data.probe_recognisability)
    print("| degradation | probes | not detected | median recognisability | "
          "band high/medium/low/unrec. | cosine at FPIR 1 % | FNIR at FPIR 1 % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    which = band_of(data.probe_recognisability)
    for r in fnir_by_degradation(data):
        rows = np.array([d == r.degradation for d in data.probe_degradation])
        counts = "/".join(str(int((which[rows] == i).sum())) for i in range(len(BANDS)))
        print(f"| {r.degradation} | {r.probes} | {r.failed_to_detect} | "
              f"{r.median_recognisability:.0f} | {counts} | {r.threshold:.3f} | {r.fnir:.3f} |")
    command = "bench/quality_bands.py " + " ".join(sys.argv[1:])
    bands = calibrate_bands(data, embedder=pipe.embedder.name, measured_with=pipe.model_version,
                            dataset=f"lfw-dev, {args.people} identities, degraded probes "
                                    f"(facesearch.evaluation.quality_bands)", command=command)
    print("\n| band | recognisability | probes | impostor pairs | genuine pairs | "
          "FMR at 60 | at 70 | at 80 | at 90 | FNMR at 80 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for b, c in zip(bands.bands, bands.calibrations, strict=True):
        if c is None:
            print(f"| {b.name} | >= {b.min_recognisability:g} | too few | | | | | | | |")
            continue
        fm = " | ".join(f"{c.false_match_rate(s):.2g}" for s in (60, 70, 80, 90))
        print(f"| {b.name} | >= {b.min_recognisability:g} | {c.images} | "
              f"{c.impostor_pairs:,} | {c.genuine_pairs} | {fm} | "
              f"{c.false_non_match_rate(80):.3f} |")
    print(f"(similarity -> cosine: 80 = {sim.to_cosine(80.0, pipe.model_version):.3f})",
          file=sys.stderr)
    if args.write:
        bands.save(args.write)


if __name__ == "__main__":
    main()
