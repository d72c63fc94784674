"""Where a dataset's files may be: inside the dataset's own folder once symlinks are resolved.

A folder registered under an allowed dataset root may hold symlinks; one leading outside it (another team's
data, a home folder) would let a run read what its team may not. The readers therefore open a file only when
its resolved real path lies inside the dataset folder's resolved path: links within the tree are followed,
links out are skipped (image folders, reported as such) or refused (`OutsideRootError`: IDX, CIFAR, npz and
packed files).
"""

from __future__ import annotations

import os
from pathlib import Path

OUTSIDE_ROOT = "a symlink leading outside the dataset's folder: not read"


class OutsideRootError(ValueError):
    """A file the reader was asked to open resolves to a path outside the dataset's folder."""


def inside(real: str, bound: str) -> bool:
    """`real` (a resolved path) is `bound` (a resolved folder) or lies below it."""
    return real == bound or real.startswith(os.path.join(bound, ""))


def ensure_inside(path: str | Path, root: str | Path) -> None:
    """Refuse `path` unless its resolved real path lies inside `root`'s."""
    if not inside(os.path.realpath(path), os.path.realpath(root)):
        raise OutsideRootError(f"{path}: {OUTSIDE_ROOT} ({root}); a dataset is read only from inside its folder")
