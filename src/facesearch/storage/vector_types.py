"""Types every vector backend shares (:mod:`facesearch.storage.indexes`,
:mod:`facesearch.storage.milvus`) and the contract names them in
(:mod:`facesearch.storage.vectors`): kept apart so that no backend imports the contract that
selects it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from facesearch.types import FloatArray, IntArray

Fetch = Callable[[IntArray], FloatArray]
"""Exact vectors of ids, from the store."""


@dataclass
class SyncStats:
    """How a backend caught up with the database in this process (tests, logs, benchmarks)."""

    incremental: int = 0
    """Catch-ups that read only the changes."""
    full: int = 0
    """Catch-ups that read every face row of a collection (no usable state or log)."""
    rows: int = 0
    """Face row ids read from the database (new faces, logged deletions, or every row)."""
