"""What every command group shares: the consoles, the common options, opening the service,
and writing JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from facesearch.governance import calibration as cal
from facesearch.limits import MAX_RESULTS
from facesearch.service import FaceSearch


def _console(stderr: bool = False) -> Console:
    """A console whose long lines (a path, an id) are never broken: ``soft_wrap`` for text,
    and, when the output is not a terminal (a pipe, a log, where rich would assume 80
    columns) and ``COLUMNS`` is not set, room enough that tables need not wrap their cells."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 1000
    return console


out = _console()


err = _console(stderr=True)


HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="FACESEARCH_HOME",
                                              help="Data directory.", show_default=False)]


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


ThresholdOpt = Annotated[float, typer.Option("--threshold", "-t", min=0, max=100,
                                             help="Minimum similarity (0-100).")]


SearchThresholdOpt = Annotated[float | None, typer.Option(
    "--threshold", "-t", min=0, max=100, show_default=False,
    help="Minimum similarity (0-100); default: the collection's (80, or its floor).")]


PurposeOpt = Annotated[str | None, typer.Option(
    "--purpose", envvar="FACESEARCH_PURPOSE", help="Why this search is made (recorded in the "
    "audit trail; required by law-enforcement collections).")]


CaseOpt = Annotated[str | None, typer.Option(
    "--case", envvar="FACESEARCH_CASE", help="Case reference (recorded in the audit trail).")]


MaxOpt = Annotated[int, typer.Option("--max", "-n", min=1, max=MAX_RESULTS,
                                     help="Most candidates per face.")]


@contextmanager
def service(home: Path | None) -> Iterator[FaceSearch]:
    fs = FaceSearch.open(home)
    try:
        yield fs
    finally:
        fs.shutdown()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")








def risk_text(r: cal.ThresholdRisk | None) -> str:
    return "no calibration for this model" if r is None else cal.format_risk(r)




def ts(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def emit(shape: BaseModel | list[BaseModel]) -> None:
    """Write ``shape`` as ``--json`` shows it: the JSON of the native API's (``/v1``) answer
    to the same request (:mod:`facesearch.shapes`)."""
    if isinstance(shape, list):
        emit_json([s.model_dump(mode="json") for s in shape])
    else:
        emit_json(shape.model_dump(mode="json"))
