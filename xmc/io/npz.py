"""PECOS-style npz bundles (``X.trn.npz``, ``Y.trn.npz``, ...): scipy CSR saved with save_npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmc.errors import DataFormatError
from xmc.io.files import atomic_file


def read_npz(path: str | Path, *, binary: bool = False) -> sp.csr_matrix:
    """Load a scipy sparse npz (no pickle) as float32 CSR; ``binary`` requires 0/1 values."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("no such file", path=path)
    try:
        M = sp.load_npz(path)
    except (ValueError, OSError, KeyError) as e:
        raise DataFormatError(f"not a scipy sparse .npz file ({e})", path=path) from None
    M = sp.csr_matrix(M, dtype=np.float32)
    try:
        M.check_format(full_check=True)
    except ValueError as e:
        raise DataFormatError(f"corrupt sparse matrix ({e})", path=path) from None
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    if not np.all(np.isfinite(M.data)):
        bad = int(np.flatnonzero(~np.isfinite(M.data))[0])
        row = int(np.searchsorted(M.indptr, bad, side="right") - 1)
        raise DataFormatError(f"NaN or inf value at row {row}, column {M.indices[bad]}", path=path)
    if binary and not np.all(M.data == 1):
        bad = int(np.flatnonzero(M.data != 1)[0])
        row = int(np.searchsorted(M.indptr, bad, side="right") - 1)
        raise DataFormatError(
            f"label matrix must be 0/1; row {row}, column {M.indices[bad]} holds {M.data[bad]}", path=path
        )
    return M


def write_npz(path: str | Path, M: sp.spmatrix) -> None:
    """Save as CSR npz atomically (readable by ``scipy.sparse.load_npz``)."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            sp.save_npz(f, sp.csr_matrix(M))
