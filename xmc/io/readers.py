"""Data readers and writers: XC text, npz bundles, raw labelled text records."""

from __future__ import annotations

from pathlib import Path

import scipy.sparse as sp

from xmc.errors import DataFormatError
from xmc.io.npz import read_npz, write_npz
from xmc.io.records import LabelVocab, Record, read_records, write_jsonl
from xmc.io.xc import read_xc, write_xc

__all__ = ["LabelVocab", "Record", "load_features", "load_labels", "load_xy", "read_npz", "read_records",
           "read_xc", "write_jsonl", "write_npz", "write_xc"]


def load_xy(x: str | Path, y: str | Path | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(X, Y) from ``X.npz`` + ``Y.npz``, or from one XC text file (then ``y`` must be None)."""
    if str(x).endswith(".npz"):
        if y is None:
            raise DataFormatError("X is an .npz file: give the labels too (Y .npz file)", path=x)
        X = read_npz(x)
        Y = read_npz(y, binary=True) if str(y).endswith(".npz") else read_xc(y)[1]
        if X.shape[0] != Y.shape[0]:
            raise DataFormatError(f"{x} has {X.shape[0]} rows but {y} has {Y.shape[0]}", path=y)
        _some_positive(Y, y)
        return X, Y
    if y is not None:
        raise DataFormatError("an XC text file holds both X and Y: give it alone", path=y)
    X, Y = read_xc(x)
    _some_positive(Y, x)
    return X, Y


def _some_positive(Y: sp.csr_matrix, path: str | Path) -> None:
    """Training labels with no positive at all: nothing to learn (and every later step degenerates)."""
    if Y.nnz == 0:
        raise DataFormatError(f"no positive label in the whole matrix ({Y.shape[0]} rows x {Y.shape[1]} "
                              "labels): nothing to learn", path=path)


def load_features(x: str | Path) -> sp.csr_matrix:
    """X alone, from an .npz file or an XC text file (labels ignored)."""
    return read_npz(x) if str(x).endswith(".npz") else read_xc(x)[0]


def load_labels(y: str | Path) -> sp.csr_matrix:
    """Y alone, from an .npz file (0/1) or an XC text file."""
    return read_npz(y, binary=True) if str(y).endswith(".npz") else read_xc(y)[1]
