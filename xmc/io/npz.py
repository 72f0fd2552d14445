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
        raise DataFormatError("no such file" if not path.exists() else "not a file", path=path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # an .npz is a zip archive; np.load would try (and refuse) a pickle
        what = "an empty file" if not magic else "gzip data" if magic[:2] == b"\x1f\x8b" else (
            "a single .npy array" if magic == b"\x93NUM" else "not a zip archive")
        raise DataFormatError(f"not a scipy sparse .npz file ({what})", path=path)
    try:
        M = _load(path)
    except DataFormatError:
        raise
    except Exception as e:  # zipfile, zlib, numpy and scipy each raise their own types on a bad file
        raise DataFormatError(f"not a readable scipy sparse .npz file ({type(e).__name__}: {e})",
                              path=path) from None
    try:
        M = sp.csr_matrix(M, dtype=np.float32)
        M.check_format(full_check=True)
    except (ValueError, TypeError, IndexError, OverflowError) as e:
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


def _load(path: Path) -> sp.spmatrix:
    """``scipy.sparse.load_npz`` without pickles, reading every member (a truncated archive fails here)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "format" not in arrays or "shape" not in arrays:
        raise DataFormatError(f"not a scipy sparse .npz file (members {sorted(arrays)}; a sparse matrix "
                              "saved with scipy.sparse.save_npz has 'format' and 'shape')", path=path)
    fmt = arrays["format"].item()
    fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
    shape = tuple(int(v) for v in arrays["shape"])
    if len(shape) != 2 or min(shape) < 0:
        raise DataFormatError(f"bad matrix shape {shape}", path=path)
    if fmt in ("csr", "csc", "bsr"):
        cls = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "bsr": sp.bsr_matrix}[fmt]
        return cls((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
    if fmt == "coo":
        return sp.coo_matrix((arrays["data"], (arrays["row"], arrays["col"])), shape=shape)
    raise DataFormatError(f"unsupported sparse format {fmt!r} (csr, csc, bsr or coo)", path=path)


def write_npz(path: str | Path, M: sp.spmatrix) -> None:
    """Save as CSR npz atomically (readable by ``scipy.sparse.load_npz``)."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            sp.save_npz(f, sp.csr_matrix(M))
