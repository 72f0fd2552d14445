"""Extreme Classification repository text format, gzip transparent.

    N D L                      header: points, features, labels
    l1,l2 f1:v1 f2:v2 ...      one line per point; 0-based; a point with no labels starts with " "

Every problem is reported with the file, the 1-based line and the field; nothing is skipped.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import scipy.sparse as sp

from xmc.errors import DataFormatError
from xmc.io.files import atomic_file


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, gunzipping when its magic bytes say gzip."""
    if not Path(path).is_file():
        raise DataFormatError("no such file", path=path)
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, text)`` of a text file (gzip transparent), each line strictly UTF-8.

    Bytes are decoded line by line so that invalid UTF-8 is reported at its line, and a truncated
    or corrupt gzip stream after the last good line; both as ``DataFormatError``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("no such file" if not path.exists() else "not a file", path=path)
    gz = is_gzip(path)
    lineno = 0
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            for raw in f:
                lineno += 1
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(f"not valid UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                          f"{e.start + 1})", path=path, line=lineno) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(f"truncated or corrupt gzip data after line {lineno} ({e})",
                              path=path, line=lineno + 1) from None
    except OSError as e:
        raise DataFormatError(f"unreadable ({e.strerror or e})", path=path) from None


def verify_gzip(path: str | Path) -> None:
    """Decompress a whole gzip file once (no decoding): a truncated or corrupt stream is a
    ``DataFormatError`` here rather than an engine's stack trace later."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataFormatError(f"truncated or corrupt gzip data ({e})", path=path) from None


def _parse_int(text: str, path: Path, line: int, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(f"{text!r} is not an integer", path=path, line=line, field=field) from None


def read_xc(path: str | Path) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Read an XC text file into (X: N x D float32 CSR, Y: N x L 0/1 float32 CSR)."""
    path = Path(path)
    feat_idx: list[int] = []
    feat_val: list[float] = []
    x_ptr = [0]
    lab_idx: list[int] = []
    y_ptr = [0]
    lines = read_lines(path)
    header = next(lines, (1, ""))[1]
    if not header:
        raise DataFormatError("empty file: expected a header line 'N D L'", path=path, line=1)
    parts = header.split()
    if len(parts) != 3:
        raise DataFormatError(f"header {header.strip()!r} must be 'N D L'", path=path, line=1,
                              field="header")
    n, d, n_labels = (_parse_int(p, path, 1, name) for p, name in zip(parts, "NDL", strict=True))
    if min(n, d, n_labels) < 0 or max(d, n_labels) >= 2**31:
        raise DataFormatError("N, D and L must be >= 0 (D and L < 2^31)", path=path, line=1,
                              field="header")
    row = 0
    for lineno, raw in lines:
        line = raw.rstrip("\r\n")
        row += 1
        if row > n:
            raise DataFormatError(f"more points than the header's N={n}", path=path, line=lineno)
        if not line:
            raise DataFormatError("empty line (a point with no labels starts with a space)",
                                  path=path, line=lineno)
        tokens = line.split(" ")
        first = tokens[0]
        if ":" not in first and first:
            labels = [_parse_int(t, path, lineno, "labels") for t in first.split(",")]
            for label in labels:
                if not 0 <= label < n_labels:
                    raise DataFormatError(f"label {label} out of range [0, {n_labels})",
                                          path=path, line=lineno, field="labels")
            if len(set(labels)) != len(labels):
                raise DataFormatError("a label is repeated", path=path, line=lineno, field="labels")
            lab_idx.extend(sorted(labels))
            tokens = tokens[1:]
        seen = len(feat_idx)
        for tok in tokens:
            if not tok:
                continue
            fi, sep, fv = tok.partition(":")
            if not sep:
                raise DataFormatError(f"{tok!r} is not 'index:value'", path=path, line=lineno,
                                      field="features")
            j = _parse_int(fi, path, lineno, "features")
            if not 0 <= j < d:
                raise DataFormatError(f"feature {j} out of range [0, {d})", path=path,
                                      line=lineno, field="features")
            try:
                v = float(fv)
            except ValueError:
                raise DataFormatError(f"value {fv!r} of feature {j} is not a number", path=path,
                                      line=lineno, field="features") from None
            if not math.isfinite(v):
                raise DataFormatError(f"value of feature {j} is {fv}", path=path, line=lineno,
                                      field="features")
            feat_idx.append(j)
            feat_val.append(v)
        if len(set(feat_idx[seen:])) != len(feat_idx) - seen:
            raise DataFormatError("a feature index is repeated", path=path, line=lineno,
                                  field="features")
        x_ptr.append(len(feat_idx))
        y_ptr.append(len(lab_idx))
    if row != n:
        raise DataFormatError(f"header says N={n} points but the file has {row}", path=path,
                              line=row + 2)
    X = sp.csr_matrix((np.asarray(feat_val, np.float32), np.asarray(feat_idx, np.int32),
                       np.asarray(x_ptr, np.int64)), shape=(n, d))
    X.sort_indices()
    Y = sp.csr_matrix((np.ones(len(lab_idx), np.float32), np.asarray(lab_idx, np.int32),
                       np.asarray(y_ptr, np.int64)), shape=(n, n_labels))
    return X, Y


def write_xc(path: str | Path, X: sp.spmatrix, Y: sp.spmatrix) -> None:
    """Write (X, Y) in XC text format, gzipped if the name ends in .gz; atomic."""
    X = sp.csr_matrix(X)
    Y = sp.csr_matrix(Y)
    if X.shape[0] != Y.shape[0]:
        raise DataFormatError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    X.sum_duplicates()
    Y.sum_duplicates()
    with atomic_file(path) as tmp:
        raw = gzip.open(tmp, "wt", encoding="utf-8") if str(path).endswith(".gz") else open(
            tmp, "w", encoding="utf-8")
        with raw as f:
            f.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
            for i in range(X.shape[0]):
                labels = ",".join(map(str, Y.indices[Y.indptr[i] : Y.indptr[i + 1]]))
                s, e = X.indptr[i], X.indptr[i + 1]
                feats = " ".join(f"{j}:{v:.9g}" for j, v in zip(X.indices[s:e], X.data[s:e], strict=True))
                # no trailing space on a row without features: readers that split on single spaces
                # (omikuji) take it for an empty feature token
                f.write(f"{labels} {feats}\n" if feats else f"{labels or ' '}\n")
