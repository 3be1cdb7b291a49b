"""``facesearch eval``: thin commands over :mod:`facesearch.evaluation` and
:mod:`facesearch.governance.calibration` (registered by :mod:`facesearch.cli`)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facesearch.evaluation.embeddings import (
    FACE_RECOGNITION,
    Embeddings,
    FaceRule,
    default_cache_dir,
    embed_images,
)
from facesearch.governance import calibration as cal

eval_app = typer.Typer(no_args_is_help=True,
                       help="Accuracy: LFW verification, open-set 1:N identification, and the "
                            "calibration that says what a threshold means.")

out = Console()
err = Console(stderr=True)

PipelinesOpt = Annotated[list[str] | None, typer.Option(
    "--pipeline", "-p", help="Pipeline to evaluate; repeat to compare in one run. "
    f"'{FACE_RECOGNITION}' is the face_recognition library's own pipeline and distance. "
    "Default: the configured pipeline (FACESEARCH_PIPELINE).", show_default=False)]
ImagesOpt = Annotated[Path, typer.Option("--images", help="Folder of person folders "
                                         "(Name/Name_NNNN.jpg), or the folder above 'images/'.")]
FaceOpt = Annotated[FaceRule, typer.Option(
    "--face", help="Which face of an image is the labelled one: nearest the image centre "
    "(LFW's crops) or the largest (what search uses).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=1,
                                                help="Worker processes (default: all cores).")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="Embedding cache folder (default: $FACESEARCH_CACHE/eval).",
    show_default=False)]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Embed every image again.")]
ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Write a Markdown report and PNG figures to this folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON, one line per "
                                                      "pipeline.")]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _pipelines(names: list[str] | None) -> list[str]:
    if names:
        return names
    from facesearch.config import Settings

    return [Settings().pipeline]


def _workers(n: int | None) -> int:
    return n or max(1, len(os.sched_getaffinity(0)))


def _device() -> str:
    from facesearch.config import Settings

    return Settings().device


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """Progress of a long step: a bar on a terminal; elsewhere (a log, a pipe, CI) one line
    each time another tenth of the work is done, so that a run is never silent for minutes."""
    if not quiet and not err.is_terminal:
        shown = {"tenth": -1}
        started = time.monotonic()

        def log_line(done: int, total: int) -> None:
            tenth = 10 if total <= 0 else min(10, done * 10 // total)
            if tenth <= shown["tenth"]:
                return
            shown["tenth"] = tenth
            pct = 100 if total <= 0 else 100 * done // total
            err.print(f"{time.strftime('%H:%M:%S')} {label}: {done:,} of {total:,} "
                      f"({pct} %, {time.monotonic() - started:.0f} s)", highlight=False,
                      markup=False)

        yield log_line
        return
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                        disable=quiet)
    with progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _embed(paths: Sequence[str], method: str, *, rule: FaceRule, workers: int | None,
           cache: Path | None, no_cache: bool, quiet: bool) -> Embeddings:
    cache_dir = None if no_cache else (cache or default_cache_dir())
    with _progress(f"embedding ({method})", quiet) as update:
        emb = embed_images(paths, method, rule=rule, workers=_workers(workers),
                           cache_dir=cache_dir, device=_device(), on_progress=update)
    failed = emb.failures()
    if failed and not quiet:
        err.print(f"[yellow]{len(failed)} image(s) without a face or unreadable[/] ({method}): "
                  + ", ".join(Path(p).name for p in failed[:8])
                  + (" ..." if len(failed) > 8 else ""), highlight=False)
    return emb


def _command() -> str:
    return shlex.join(["facesearch", *sys.argv[1:]])


def _write(report: Path, name: str, text: str) -> Path:
    report.mkdir(parents=True, exist_ok=True)
    path = report / name
    path.write_text(text)
    return path


# -- lfw --------------------------------------------------------------------------------

@eval_app.command("lfw")
def lfw(
    pairs: Annotated[Path, typer.Option("--pairs", help="LFW-format pairs file "
                                        "(pairs.txt, pairsDevTest.txt, ...).")],
    images: ImagesOpt,
    train: Annotated[Path | None, typer.Option(
        "--train", help="Pairs file to choose the threshold on, for a pairs file without "
        "folds (e.g. pairsDevTrain.txt).")] = None,
    pipeline: PipelinesOpt = None,
    face: FaceOpt = FaceRule.CENTRE,
    workers: WorkersOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """LFW verification: strict accuracy, TAR at FAR 1e-3, ROC curve.

    Cross-validated over the file's folds (pairs.txt: 10); a file without folds
    (pairsDevTest.txt) takes its threshold from --train. A pair whose face is not found is
    an error. --json: one line per pipeline, accuracy in percent.
    """
    from facesearch.evaluation.datasets import images_root, pair_images, read_pairs
    from facesearch.evaluation.verification import verify

    test_pairs = read_pairs(pairs)
    train_pairs = read_pairs(train) if train is not None else None
    if test_pairs.folds == 1 and train_pairs is None:
        raise typer.BadParameter(f"{pairs} has no folds: give --train FILE to choose the "
                                 "threshold on", param_hint="--train")
    root = images_root(images)
    files = pair_images([p for p in (test_pairs, train_pairs) if p is not None], root)
    results = []
    for method in _pipelines(pipeline):
        emb = _embed(files, method, rule=face, workers=workers, cache=cache,
                     no_cache=no_cache, quiet=as_json)
        r = verify(test_pairs, emb, root, train=train_pairs)
        results.append(r)
        if as_json:
            emit_json(r.to_json())
    if not as_json:
        t = Table("pipeline", "protocol", "pairs", "accuracy (strict)", "threshold",
                  "TAR @ FAR 1e-3", "failed pairs (images)",
                  title=f"LFW verification: {pairs.name}")
        for r in results:
            tar = "n/a (< 1000 mismatched)" if r.tar_at_far is None else \
                f"{100 * r.tar_at_far:.2f}%"
            t.add_row(r.method, r.protocol, f"{r.matched}+{r.mismatched}",
                      f"{r.accuracy:.2f}% ± {r.accuracy_std:.2f}",
                      f"{r.metric} {r.threshold:.4g}", tar,
                      f"{r.failed_pairs} ({len(r.failed_images)})")
        out.print(t)
    if report is not None:
        from facesearch.evaluation.report import plot_roc, verification_markdown

        plot_roc([r.roc for r in results], report / "lfw-roc.png",
                 f"LFW ROC: {pairs.name}")
        _write(report, "lfw.md", f"# LFW verification: {pairs.name}\n\n`{_command()}`\n\n"
               + verification_markdown(results, "lfw-roc.png"))
        if not as_json:
            err.print(f"report: {report / 'lfw.md'}")


# -- identification ---------------------------------------------------------------------

@eval_app.command("identification")
def identification(
    images: ImagesOpt,
    pipeline: PipelinesOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the gallery / probe split.")] = 0,
    enrolled_fraction: Annotated[float, typer.Option(
        min=0.01, max=1.0, help="Share of people with 2+ images who are enrolled.")] = 0.5,
    distractor_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of people with one image added to the gallery as "
        "distractors (the rest are non-mated probes).")] = 0.5,
    face: FaceOpt = FaceRule.CENTRE,
    workers: WorkersOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open-set 1:N: FNIR at FPIR 1% and 0.1%, rank-1/5 hit rates, DET curve.

    On a folder of labelled faces (one folder per person), split by --seed: one gallery image
    per enrolled person, mated probes (their other images), non-mated probes (people not
    enrolled) and distractors (one-image people added to the gallery). Rates are fractions,
    as NIST FRTE 1:N reports them.
    """
    from facesearch.evaluation.datasets import labelled_images
    from facesearch.evaluation.identification import identify, split_identification

    people = labelled_images(images)
    split = split_identification(people, seed=seed, enrolled_fraction=enrolled_fraction,
                                 distractor_fraction=distractor_fraction)
    files = split.images()
    results = []
    for method in _pipelines(pipeline):
        emb = _embed(files, method, rule=face, workers=workers, cache=cache,
                     no_cache=no_cache, quiet=as_json)
        r = identify(split, emb)
        results.append(r)
        if as_json:
            emit_json(r.to_json())
    if not as_json:
        t = Table("pipeline", "gallery", "mated / non-mated", "FNIR @ FPIR 1%",
                  "FNIR @ FPIR 0.1%", "rank-1", "rank-5", "failed gallery / probes",
                  title=f"open-set 1:N identification (seed {seed})")
        for r in results:
            cells = ["n/a (too few non-mated)" if f.fnir is None else
                     f"{f.fnir:.4f} ({r.metric} {f.threshold:.4g})" for f in r.fnir]
            t.add_row(r.method, f"{r.gallery_size} ({r.enrolled} + {r.distractors} distr.)",
                      f"{r.mated_searches} / {r.non_mated_searches}", *cells,
                      f"{100 * r.rank(1):.2f}%", f"{100 * r.rank(5):.2f}%",
                      f"{r.failed_gallery} / {r.failed_probes}")
        out.print(t)
    if report is not None:
        from facesearch.evaluation.report import identification_markdown, plot_det

        plot_det([r.det for r in results], report / "identification-det.png",
                 "open-set 1:N DET")
        _write(report, "identification.md",
               f"# Open-set 1:N identification\n\n`{_command()}`\n\n"
               + identification_markdown(results, "identification-det.png"))
        if not as_json:
            err.print(f"report: {report / 'identification.md'}")


# -- calibrate --------------------------------------------------------------------------

FR_DISTANCES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


@eval_app.command("calibrate")
def calibrate(
    images: ImagesOpt,
    pipeline: PipelinesOpt = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write the facesearch pipeline's calibration file here.")] = None,
    face: FaceOpt = FaceRule.CENTRE,
    workers: WorkersOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure FMR and FNMR per threshold on every image pair of a labelled folder.

    Impostor pairs: all cross-identity pairs; genuine: all same-identity pairs. Below the
    lowest measurable FMR a fitted tail extrapolates (marked ~). --out writes the calibration
    file facesearch ships (src/facesearch/data/calibration/<embedder>.json).
    """
    from facesearch.evaluation.calibration_data import calibrate as make_calibration
    from facesearch.evaluation.calibration_data import pair_score_sets, score_table
    from facesearch.evaluation.datasets import labelled_images
    from facesearch.evaluation.report import (
        calibration_markdown,
        plot_calibration,
        score_table_markdown,
    )

    methods = _pipelines(pipeline)
    if out_file is not None and len([m for m in methods if m != FACE_RECOGNITION]) != 1:
        raise typer.BadParameter("--out needs exactly one facesearch pipeline among "
                                 "--pipeline", param_hint="--out")
    people = labelled_images(images)
    files = [f for fs in people.values() for f in fs]
    labels = [n for n, fs in people.items() for _ in fs]
    dataset = f"{images} ({len(people):,} people)"
    sections = []
    for method in methods:
        emb = _embed(files, method, rule=face, workers=workers, cache=cache,
                     no_cache=no_cache, quiet=as_json)
        if method == FACE_RECOGNITION:
            imp, gen = pair_score_sets(emb, labels)
            rows = score_table(imp, gen, FR_DISTANCES, emb.metric)
            if as_json:
                emit_json({"method": method, "model_version": emb.model_version,
                           "metric": emb.metric.name, "impostor_pairs": len(imp),
                           "genuine_pairs": len(gen),
                           "table": [{"threshold": r.threshold,
                                      "false_match_rate": r.false_match_rate,
                                      "false_matches": r.false_matches,
                                      "false_non_match_rate": r.false_non_match_rate}
                                     for r in rows]})
            else:
                t = Table("distance", "FMR (1:1)", "false matches", "FNMR (1:1)",
                          title=f"{method}: {len(imp):,} impostor, {len(gen):,} genuine pairs")
                for r in rows:
                    t.add_row(f"{r.threshold:g}", f"{r.false_match_rate:.2g}",
                              str(r.false_matches), f"{100 * r.false_non_match_rate:.2f}%")
                out.print(t)
            sections.append(f"## {method}\n\n" + score_table_markdown(
                method, emb.model_version, emb.metric.name, rows, len(imp), len(gen)))
            continue
        c = make_calibration(emb, labels, dataset=dataset, command=_command())
        if out_file is not None:
            c.save(out_file)
            if not as_json:
                err.print(f"wrote {out_file}")
        if as_json:
            emit_json({"method": method, "model_version": emb.model_version,
                       "impostor_pairs": c.impostor_pairs, "genuine_pairs": c.genuine_pairs,
                       "measurable_fmr": c.measurable_fmr,
                       "tail": {"anchor_cosine": c.tail.anchor_cosine,
                                "anchor_fmr": c.tail.anchor_fmr, "scale": c.tail.scale},
                       "table": [_risk_json(r) for r, _ in c.table(_table_sims())]})
        else:
            _print_calibration(c, None)
        png = None
        if report is not None:
            png = f"calibration-{cal.safe_name(method)}.png"
            plot_calibration(c, report / png)
        sections.append(f"## {method}\n\n" + calibration_markdown(c, figure_png=png))
    if report is not None:
        _write(report, "calibration.md", f"# Calibration\n\n`{_command()}`\n\n"
               + "\n".join(sections))
        if not as_json:
            err.print(f"report: {report / 'calibration.md'}")


def _table_sims() -> tuple[float, ...]:
    from facesearch.evaluation.report import SIMILARITIES

    return SIMILARITIES


def _risk_json(r: cal.ThresholdRisk) -> dict[str, object]:
    return {"similarity": r.similarity, "cosine": round(r.cosine, 5),
            "false_match_rate": r.false_match_rate,
            "false_non_match_rate": round(r.false_non_match_rate, 6),
            "gallery_size": r.gallery_size, "expected_fpir": r.expected_fpir,
            "extrapolated": r.extrapolated, "measurable_fmr": r.measurable_fmr,
            "measured_with": r.measured_with}


def _print_calibration(c: cal.Calibration, gallery: int | None) -> None:
    cols = ["similarity", "cosine", "FMR (1:1)", "FNMR (1:1)"]
    if gallery is not None:
        cols.append(f"expected FPIR, N={gallery:,}")
    t = Table(*cols, title=f"{c.embedder} (measured with {c.measured_with}): "
                           f"{c.impostor_pairs:,} impostor / {c.genuine_pairs:,} genuine pairs; "
                           "~ = extrapolated")
    for r, _ in c.table(_table_sims()):
        approx = "~" if r.extrapolated else ""
        row = [f"{r.similarity:g}", f"{r.cosine:.4f}", f"{approx}{r.false_match_rate:.2g}",
               f"{100 * r.false_non_match_rate:.2f}%"]
        if gallery is not None:
            row.append(f"{approx}{cal.fpir_for_fmr(r.false_match_rate, gallery):.2g}")
        t.add_row(*row)
    out.print(t)


# -- threshold --------------------------------------------------------------------------

@eval_app.command("threshold")
def threshold(
    fpir: Annotated[float | None, typer.Option(
        "--fpir", help="Target expected FPIR (fraction: 0.001 = 0.1%): print the threshold "
        "that gives it.")] = None,
    similarity: Annotated[float | None, typer.Option(
        "--similarity", "-s", min=0, max=100, help="Print what this threshold means.")] = None,
    gallery: Annotated[int | None, typer.Option(
        "--gallery", "-N", min=1, help="Gallery size (faces).")] = None,
    collection: Annotated[str | None, typer.Option(
        help="Take the gallery size and model from this collection.")] = None,
    home: Annotated[Path | None, typer.Option("--home", envvar="FACESEARCH_HOME",
                                              help="Data directory.", show_default=False)] = None,
    model_version: Annotated[str | None, typer.Option(
        help="Model version (default: the default model's embedder).")] = None,
    measured_only: Annotated[bool, typer.Option(
        "--measured-only", help="Refuse (exit 1) rather than answer from the extrapolated "
        "tail.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
) -> None:
    """What a threshold means, or which threshold gives a target FPIR.

    --similarity S: its 1:1 false match rate and expected FPIR on --gallery N faces.
    --fpir P --gallery N: the threshold with expected FPIR <= P ("which threshold gives FPIR
    <= 0.1% on 300,000?": --fpir 0.001 --gallery 300000). Neither: the calibration table.
    """
    if fpir is not None and similarity is not None:
        raise typer.BadParameter("give --fpir or --similarity, not both")
    if collection is not None:
        from facesearch.service import FaceSearch

        fs = FaceSearch.open(home)
        try:
            info = fs.collections.describe(collection)
        finally:
            fs.shutdown()
        gallery = gallery or max(info.face_count, 1)
        model_version = model_version or info.model_version
    c = cal.load_calibration(model_version)
    if fpir is not None:
        if gallery is None:
            raise typer.BadParameter("--fpir needs --gallery N (or --collection)")
        a = c.answer(fpir, gallery)
        if measured_only and a.risk.extrapolated:
            from facesearch.errors import InvalidParameterError

            raise InvalidParameterError(
                f"FPIR <= {fpir:g} at N={gallery:,} needs a 1:1 FMR of {a.required_fmr:.2g}, "
                f"below the lowest FMR the calibration measures ({c.measurable_fmr:.2g}); the "
                f"lowest FPIR measured directly at N={gallery:,} is "
                f"{cal.fpir_for_fmr(c.measurable_fmr, gallery):.2g}")
        if as_json:
            emit_json({"target_fpir": a.target_fpir, "gallery_size": a.gallery_size,
                       "required_fmr": a.required_fmr, "threshold": a.risk.similarity,
                       **_risk_json(a.risk), "note": a.note, "exact_model": c.exact})
            return
        r = a.risk
        out.print(f"threshold [bold]{r.similarity:g}[/] for expected FPIR <= {fpir:g} on "
                  f"{gallery:,} faces (needs 1:1 FMR <= {a.required_fmr:.2g})", highlight=False)
        out.print(f"  at {r.similarity:g}: {cal.format_risk(r)}; FNMR 1:1 "
                  f"{100 * r.false_non_match_rate:.1f}% on the calibration's genuine pairs",
                  highlight=False)
        out.print(f"  {a.note}", highlight=False)
        out.print(f"  calibration: {c.embedder}, measured with {c.measured_with} on "
                  f"{c.dataset}", highlight=False)
        return
    if similarity is not None:
        r = c.risk(similarity, gallery)
        if as_json:
            emit_json({**_risk_json(r), "exact_model": c.exact})
            return
        out.print(f"similarity {similarity:g}: {cal.format_risk(r)}; FNMR 1:1 "
                  f"{100 * r.false_non_match_rate:.1f}%", highlight=False)
        return
    if as_json:
        emit_json({"embedder": c.embedder, "measured_with": c.measured_with,
                   "table": [_risk_json(c.risk(s, gallery)) for s in _table_sims()]})
        return
    _print_calibration(c, gallery)
