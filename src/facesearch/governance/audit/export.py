"""The audit trail's export: JSON lines or CSV of every field, hashes included, so that anyone
can recompute the chain from it; and reading an export back."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Literal, TextIO

from facesearch.errors import InvalidParameterError
from facesearch.governance.audit.event import AuditRecord, record_from_json

ExportFormat = Literal["jsonl", "csv"]

CSV_FIELDS = ("seq", "ts", "operation", "actor", "role", "collection", "purpose", "case_ref",
              "client", "probe_sha256", "threshold", "model_version", "results", "details",
              "prev_hash", "hash")


def _csv_cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    return str(v)  # str(float) is the shortest round-trip repr


def write_export(fmt: ExportFormat, out: TextIO, records: Iterable[AuditRecord]) -> int:
    """Write ``records`` to ``out`` as JSON lines or CSV (with a header row: CSV cells hold
    results and details as JSON, None as empty); returns how many. An unknown ``fmt`` is
    refused before anything is read or written."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidParameterError(f"export format must be jsonl or csv, got {fmt!r}")
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_FIELDS)
    n = 0
    for rec in records:
        obj = rec.to_json()
        if writer is None:
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        else:
            writer.writerow([_csv_cell(obj[k]) for k in CSV_FIELDS])
        n += 1
    return n


def load_export(fmt: ExportFormat, inp: TextIO) -> Iterator[AuditRecord]:
    """Read back what :func:`write_export` wrote (for offline checks and imports)."""
    if fmt == "jsonl":
        for line in inp:
            if line.strip():
                yield record_from_json(json.loads(line))
    elif fmt == "csv":
        for row in csv.DictReader(inp):
            obj: dict[str, object] = {k: (v if v != "" else None) for k, v in row.items()}
            for k in ("results", "details"):
                obj[k] = json.loads(row[k])
            obj["seq"] = int(row["seq"])
            obj["ts"] = float(row["ts"])
            obj["threshold"] = None if row["threshold"] == "" else float(row["threshold"])
            yield record_from_json(obj)
    else:
        raise InvalidParameterError(f"export format must be jsonl or csv, got {fmt!r}")
