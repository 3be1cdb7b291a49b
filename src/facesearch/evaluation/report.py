"""Evaluation reports: ROC, DET and calibration figures (PNG) and Markdown tables.

Figures are drawn with matplotlib's object API (no pyplot state); matplotlib is imported when
a figure is drawn, never at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facesearch.evaluation.calibration_data import ScoreRow
from facesearch.evaluation.identification import IdentificationResult
from facesearch.evaluation.verification import Curve, VerificationResult
from facesearch.governance.calibration import Calibration, fpir_for_fmr

GALLERY_SIZES: tuple[int, ...] = (1_000, 10_000, 100_000, 300_000, 1_000_000)
SIMILARITIES: tuple[float, ...] = (50, 60, 70, 75, 80, 85, 90, 95, 97, 98, 99, 99.5, 99.9,
                                   99.99, 99.999, 99.9999)


def _figure(title: str, xlabel: str, ylabel: str):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _log_floor(values: Sequence[np.ndarray], default: float = 1e-4) -> float:
    """A lower axis limit for log-scaled rates: just below the smallest positive value."""
    pos = [float(v[v > 0].min()) for v in values if np.any(v > 0)]
    return 0.5 * min(pos) if pos else default


def plot_roc(curves: Sequence[Curve], path: Path, title: str = "ROC") -> Path:
    """TAR against FAR (log x) for each curve; zero-FAR points are left out."""
    fig, ax = _figure(title, "false accept rate (FAR)", "true accept rate (TAR)")
    for c in curves:
        keep = c.x > 0
        ax.plot(c.x[keep], c.y[keep], label=c.label, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlim(_log_floor([c.x for c in curves]), 1.0)
    ax.set_ylim(0.0, 1.005)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_det(curves: Sequence[Curve], path: Path, title: str = "DET") -> Path:
    """FNIR against FPIR, both log, for each curve (NIST FRTE's DET plot)."""
    fig, ax = _figure(title, "false positive identification rate (FPIR)",
                      "false negative identification rate (FNIR)")
    for c in curves:
        keep = (c.x > 0) & (c.y > 0)
        ax.plot(c.x[keep], c.y[keep], label=c.label, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(_log_floor([c.x for c in curves]), 1.0)
    ax.set_ylim(_log_floor([c.y for c in curves]), 1.0)
    ax.legend(loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_calibration(cal: Calibration, path: Path) -> Path:
    """Measured FMR and FNMR against the cosine threshold (similarity on the top axis), with
    the FMR used (measurement + fitted tail) and the lowest measurable FMR."""
    from facesearch.vision import similarity as sim

    fig, ax = _figure(f"calibration: {cal.embedder} ({cal.measured_with})",
                      "threshold (cosine)", "rate")
    lo = float(sim.to_cosine(50.0, cal.embedder)) - 0.05  # below similarity 50 nothing matters
    keep = (cal.cosine >= lo) & (cal.false_matches > 0)
    ax.plot(cal.cosine[keep], cal.false_matches[keep] / cal.impostor_pairs, lw=2,
            label="FMR measured")
    c_model = np.linspace(lo, 1.0, 1501)
    ax.plot(c_model, cal.fmr_at_cosine(c_model), "--", label="FMR used (measured + tail)")
    fnmr = cal.false_non_matches / max(cal.genuine_pairs, 1)
    keep = (cal.cosine >= lo) & (fnmr > 0)
    ax.plot(cal.cosine[keep], fnmr[keep], label="FNMR measured")
    ax.axhline(cal.measurable_fmr, color="grey", lw=0.8, ls=":",
               label=f"lowest measurable FMR ({cal.measurable_fmr:.1g})")
    ax.set_yscale("log")
    ax.set_ylim(1e-10, 1.0)
    ax.set_xlim(lo, 1.0)
    ax.legend(loc="lower left")
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    marks = [60.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.9, 99.99, 99.999]
    top.set_xticks([float(sim.to_cosine(m, cal.embedder)) for m in marks])
    top.set_xticklabels([f"{m:g}" for m in marks], fontsize=7, rotation=45)
    top.set_xlabel("similarity")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _pct(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{nd}f} %"


def _rate(v: float) -> str:
    if v == 0:
        return "0"
    return ">0.99" if 0.99 < v < 1 else f"{v:.2g}"


def verification_markdown(results: Sequence[VerificationResult], roc_png: str | None) -> str:
    lines = [
        ("| method | protocol | pairs | accuracy (strict) | std | SEM | threshold | "
         "TAR @ FAR 1e-3 | failed pairs (images) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        tar = "n/a (too few mismatched pairs)" if r.tar_at_far is None else _pct(r.tar_at_far)
        lines.append(
            f"| {r.method} (`{r.model_version}`) | {r.protocol} | {r.matched}+{r.mismatched} | "
            f"{r.accuracy:.2f} % | {r.accuracy_std:.2f} | {r.accuracy_sem:.2f} | "
            f"{r.metric} {r.threshold:.4g} | {tar} | {r.failed_pairs} "
            f"({len(r.failed_images)}) |")
    if roc_png:
        lines += ["", f"![ROC]({roc_png})"]
    return "\n".join(lines) + "\n"


def identification_markdown(results: Sequence[IdentificationResult],
                            det_png: str | None) -> str:
    targets = [f.fpir for f in results[0].fnir] if results else []
    head = " | ".join(f"FNIR @ FPIR {t:g} (threshold)" for t in targets)
    ranks = [k for k, _ in results[0].ranks] if results else []
    lines = [
        f"| method | gallery N | mated / non-mated searches | {head} | "
        + " | ".join(f"rank-{k}" for k in ranks) + " | failed gallery / probes |",
        "|---|---|---|" + "---|" * (len(targets) + len(ranks)) + "---|",
    ]
    for r in results:
        cells = []
        for f in r.fnir:
            cells.append("n/a (too few non-mated searches)" if f.fnir is None else
                         f"{f.fnir:.4f} ({r.metric} {f.threshold:.4g})")
        lines.append(
            f"| {r.method} (`{r.model_version}`) | {r.gallery_size} ({r.enrolled} enrolled + "
            f"{r.distractors} distractors) | {r.mated_searches} / {r.non_mated_searches} | "
            + " | ".join(cells) + " | "
            + " | ".join(f"{100 * v:.2f} %" for _, v in r.ranks)
            + f" | {r.failed_gallery} / {r.failed_probes} |")
    if det_png:
        lines += ["", f"![DET]({det_png})"]
    return "\n".join(lines) + "\n"


def calibration_markdown(cal: Calibration, similarities: Sequence[float] = SIMILARITIES,
                         gallery_sizes: Sequence[int] = GALLERY_SIZES,
                         figure_png: str | None = None) -> str:
    lines = [
        (f"Calibration of `{cal.embedder}`, measured with `{cal.measured_with}` on "
         f"{cal.dataset}: {cal.images:,} images ({cal.images_without_face} without a face), "
         f"{cal.impostor_pairs:,} impostor pairs, {cal.genuine_pairs:,} genuine pairs. "
         f"Lowest measurable FMR ({cal.min_false_matches} false matches): "
         f"{cal.measurable_fmr:.2g}; tail anchored at cosine {cal.tail.anchor_cosine:.4f} "
         f"(FMR {cal.tail.anchor_fmr:.2g}), scale {cal.tail.scale:.5f}. "
         "Rows marked * are extrapolated from the fitted tail."),
        "",
        "| similarity | cosine | FMR (1:1) | FNMR (1:1) | "
        + " | ".join(f"expected FPIR, N={n:,}" for n in gallery_sizes) + " |",
        "|---|---|---|---|" + "---|" * len(gallery_sizes),
    ]
    for r, fpirs in cal.table(similarities, gallery_sizes):
        star = "*" if r.extrapolated else ""
        lines.append(
            f"| {r.similarity:g}{star} | {r.cosine:.4f} | {_rate(r.false_match_rate)}{star} | "
            f"{_pct(r.false_non_match_rate)} | "
            + " | ".join(_rate(f) + star for f in fpirs) + " |")
    lines += [""] + [f"Note: {n}." for n in cal.notes]
    if figure_png:
        lines += ["", f"![calibration]({figure_png})"]
    return "\n".join(lines) + "\n"


def score_table_markdown(method: str, model_version: str, metric: str,
                         rows: Sequence[ScoreRow], impostor_pairs: int, genuine_pairs: int,
                         gallery_sizes: Sequence[int] = GALLERY_SIZES) -> str:
    lines = [
        (f"Measured rates of {method} (`{model_version}`), {metric} thresholds "
         f"({impostor_pairs:,} impostor pairs, {genuine_pairs:,} genuine pairs; no tail fit: "
         "0 means no false match observed)."),
        "",
        f"| {metric} | FMR (1:1) | false matches | FNMR (1:1) | "
        + " | ".join(f"expected FPIR, N={n:,}" for n in gallery_sizes) + " |",
        "|---|---|---|---|" + "---|" * len(gallery_sizes),
    ]
    for r in rows:
        lines.append(
            f"| {r.threshold:g} | {_rate(r.false_match_rate)} | {r.false_matches} | "
            f"{_pct(r.false_non_match_rate)} | "
            + " | ".join(_rate(fpir_for_fmr(r.false_match_rate, n)) for n in gallery_sizes)
            + " |")
    return "\n".join(lines) + "\n"
