"""The sharded fit's storage: row shards, per-cluster partitions and per-shard results as npz files.

Layout under the work folder (every node of a cluster must see the same folder: a shared or
network filesystem; on one machine any local folder)::

    rows/train-<s>.npz, rows/valid-<s>.npz   shard s's prepared rows: X (CSR), Y (CSR)
    sums/s<shard>.npz, pifa.npz              shards' PIFA and label-count sums; their normalised total
    <pass>/p<parent>/s<shard>.npz            the rows of shard s routed to one parent, and their
                                             targets for its children (a shuffle's output)
    <pass>/w<parent>-<child_start>.npz       a cluster unit's trained weights (COO triplets)
    <pass>/s<shard>.npz                      a shard's share of the gains, and its matching
    model/W<n>.npz                           a stored layer matrix (CSC), never rewritten

A pass folder is removed once the driver has read what it needs. Files are written atomically
(a retried task rewrites its file whole) and read without pickles.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.io.files import atomic_file


def save_matrices(path: str | Path, **matrices: sp.spmatrix | np.ndarray) -> Path:
    """Sparse matrices (CSC kept CSC, any other format stored as CSR) and dense arrays under their
    names, in one npz, atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, A in matrices.items():
        if sp.issparse(A):
            M: Any = A if getattr(A, "format", "") == "csc" else sp.csr_matrix(A)
            parts = {"data": M.data, "indices": M.indices, "indptr": M.indptr,
                     "shape": np.asarray(M.shape, np.int64), "format": np.asarray(M.format)}
            arrays.update({f"{name}.{k}": np.asarray(v) for k, v in parts.items()})
        else:
            arrays[name] = np.asarray(A)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


def load_matrices(path: str | Path, *names: str) -> dict[str, Any]:
    """What ``save_matrices`` wrote: sparse matrices and arrays by name (only ``names``, if given)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if not names or k.rpartition(".")[0] in names or k in names}
    out: dict[str, Any] = {}
    for key in arrays:
        name, _, part = key.rpartition(".")
        if part == "shape" and name:
            kind = sp.csc_matrix if str(arrays.get(f"{name}.format", "csr")) == "csc" else sp.csr_matrix
            out[name] = kind((arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]),
                             shape=tuple(int(v) for v in arrays[key]))
        elif not name or part not in ("data", "indices", "indptr", "format"):
            out[key] = arrays[key]
    return out


def load_csr(path: str | Path, name: str) -> sp.csr_matrix:
    """One named CSR matrix of a ``save_matrices`` file."""
    M = load_matrices(path, name)[name]
    assert sp.issparse(M), f"{path}: {name} is not a sparse matrix"
    return sp.csr_matrix(M)


def rows_file(root: Path, split: str, shard: int) -> Path:
    return root / "rows" / f"{split}-{shard:05d}.npz"


def partition_file(folder: Path, parent: int, shard: int) -> Path:
    return folder / f"p{parent:07d}" / f"s{shard:05d}.npz"


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
