"""Labelled image folders (one folder per person) and LFW-style pairs files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.types import IntArray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")



def images_root(directory: Path) -> Path:
    """The folder holding one sub-folder per person: ``directory`` or ``directory/images``."""
    d = Path(directory)
    if not d.is_dir():
        raise InvalidParameterError(f"{d}: no such folder")
    sub = d / "images"
    return sub if sub.is_dir() else d


def lfw_image(name: str, number: int) -> str:
    """LFW's relative image path: ``Name/Name_NNNN.jpg``."""
    return f"{name}/{name}_{number:04d}.jpg"


def labelled_images(directory: Path) -> dict[str, list[str]]:
    """Person (folder name) to the sorted image paths in it, for a folder of person folders."""
    root = images_root(directory)
    people: dict[str, list[str]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in d.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            people[d.name] = files
    if not people:
        raise InvalidParameterError(f"{root}: no person folders with images")
    return people


@dataclass(frozen=True, eq=False)
class PairList:
    """Image pairs of an LFW-format pairs file (columnar). ``left``/``right``: image paths
    relative to the images folder; ``fold``: 0-based fold of each pair."""

    left: tuple[str, ...]
    right: tuple[str, ...]
    same: npt.NDArray[np.bool_]
    fold: IntArray
    folds: int
    source: str = ""

    def __len__(self) -> int:
        return len(self.left)


def read_pairs(path: Path) -> PairList:
    """Read an LFW pairs file: a header ``N`` (one set of N matched + N mismatched pairs) or
    ``F<TAB>N`` (F folds of N matched then N mismatched), then ``name n1 n2`` (same person)
    or ``name1 n1 name2 n2`` (different people) lines."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise InvalidParameterError(f"{path}: empty pairs file")
    head = lines[0]
    try:
        folds, per = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
    except ValueError:
        raise InvalidParameterError(f"{path}: first line must be 'N' or 'FOLDS<TAB>N', got "
                                    f"{' '.join(head)!r}") from None
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise InvalidParameterError(f"{path}: header promises {folds * 2 * per} pairs, "
                                    f"found {len(body)}")
    left, right, same, fold = [], [], [], []
    for i, f in enumerate(body):
        try:
            if len(f) == 3:
                a, b, s = lfw_image(f[0], int(f[1])), lfw_image(f[0], int(f[2])), True
            elif len(f) == 4:
                a, b, s = lfw_image(f[0], int(f[1])), lfw_image(f[2], int(f[3])), False
            else:
                raise ValueError
        except ValueError:
            raise InvalidParameterError(f"{path}: line {i + 2} is not a pair: "
                                        f"{' '.join(f)!r}") from None
        left.append(a)
        right.append(b)
        same.append(s)
        fold.append(i // (2 * per))
    return PairList(tuple(left), tuple(right), np.array(same, bool), np.array(fold, np.int64),
                    folds, str(path))


def pair_images(pairs: Sequence[PairList], root: Path) -> list[str]:
    """The distinct image paths (under ``root``) that ``pairs`` name, sorted."""
    names = sorted({n for p in pairs for n in (*p.left, *p.right)})
    return [str(root / n) for n in names]


