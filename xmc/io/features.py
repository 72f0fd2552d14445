"""The Spark -> trainer contract: a features bundle folder, and its loader (pyarrow and scipy only).

    manifest.json            format, schema version, rows and nnz per split, dimensions,
                             normalisation, params, input fingerprint, bad-record report, checksums
    <split>/part-*.parquet   train (valid, test): doc_id string, feat_idx array<int32>,
                             feat_val array<float32>, label_idx array<int32>; rows in input order
                             (file, line), part files in that order
    labels.txt               label names by index (frequency order); absent for XC input
    label_stats.npz          freq: training documents per label
    label_cooc/part-*.parquet  label_idx, cooc_idx array<int32>, cooc_count array<int64> (top-k)
    pifa/part-*.parquet      label_idx, feat_idx, feat_val: rows of normalize(Y^T X) on train
    vectorizer/              the fitted text transform (text input only), see xmc.io.vectorizer

The loader builds CSR matrices straight from the Arrow list columns (offsets and flattened
values), never through text, and checks row counts, index ranges and finiteness.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from xmc.core.tree import pifa
from xmc.errors import BundleError
from xmc.io.files import read_manifest_file, verify_checksums

FORMAT = "xmc-features"
SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")
SHARD_COLUMNS: dict[str, str] = {"doc_id": "string", "feat_idx": "array<int32>", "feat_val": "array<float32>",
                                 "label_idx": "array<int32>"}
"""The columns of a split's shards, in order, with their types: the Spark job and ``write_split`` write
them, ``load_split`` reads them."""


@dataclass
class FeatureSplit:
    """One split of a bundle in memory: X (N x D, float32), Y (N x L, 0/1 float32), the record ids."""

    X: sp.csr_matrix
    Y: sp.csr_matrix
    doc_ids: list[str]


def read_manifest(bundle: str | Path, verify: bool = True) -> dict[str, Any]:
    """The bundle's manifest; with ``verify`` every listed file's checksum is checked too."""
    manifest = read_manifest_file(bundle, fmt=FORMAT, version=SCHEMA_VERSION, kind="a features bundle",
                                  noun="features bundle",
                                  fix=f"make one with `xmc featurize --input CORPUS --out {bundle}`")
    for key, kind in (("n_features", int), ("n_labels", int), ("splits", dict)):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise BundleError(f"{Path(bundle) / 'manifest.json'}: missing or bad field {key!r}")
    if verify:
        # the shards are checked by row counts and index ranges as they load; every other file by digest
        verify_checksums(bundle, manifest.get("files"), required=("label_stats.npz",),
                         covered=lambda name: "/" not in name or name.startswith("vectorizer/"))
    return manifest


def _table(folder: Path, columns: list[str]) -> pa.Table:
    """The part files of one Spark output folder, in part order (= row order), as one table."""
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise BundleError(f"{folder}: no part-*.parquet files")
    try:
        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    except (pa.ArrowException, OSError) as e:
        raise BundleError(f"{folder}: unreadable parquet ({e})") from None


def _csr(indices: pa.ChunkedArray, values: pa.ChunkedArray | None, n_cols: int, what: str) -> sp.csr_matrix:
    """CSR from a list<int> column (and a list<float> column of the same shape, else ones)."""
    lengths = pc.list_value_length(indices).fill_null(0).to_numpy(zero_copy_only=False)
    indptr = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # np.array copies: Arrow's buffers are read-only and scipy sorts indices in place
    idx = np.array(pc.list_flatten(indices).to_numpy(zero_copy_only=False), dtype=np.int32)
    if values is None:
        val = np.ones(len(idx), np.float32)
    else:
        val = np.array(pc.list_flatten(values).to_numpy(zero_copy_only=False), dtype=np.float32)
        if len(val) != len(idx):
            raise BundleError(f"{what}: index and value arrays differ in length")
        if not np.all(np.isfinite(val)):
            raise BundleError(f"{what}: NaN or inf values")
    if len(idx) and (idx.min() < 0 or idx.max() >= n_cols):
        raise BundleError(f"{what}: index out of range [0, {n_cols})")
    return sp.csr_matrix((val, idx, indptr), shape=(len(lengths), n_cols))


def load_split(bundle: str | Path, split: str = "train") -> FeatureSplit:
    """X, Y and ids of one split, rows in the order featurize wrote them."""
    folder = Path(bundle)
    manifest = read_manifest(folder)
    info = manifest["splits"].get(split)
    if info is None:
        raise BundleError(f"{folder}: no {split!r} split; it has {sorted(manifest['splits'])}")
    if not isinstance(info, dict) or not isinstance(info.get("rows"), int) or info["rows"] < 0:
        raise BundleError(f"{folder / 'manifest.json'}: bad 'splits.{split}' entry")
    if info["rows"] == 0:  # Spark writes no folder for an empty split
        empty = sp.csr_matrix((0, manifest["n_features"]), dtype=np.float32)
        return FeatureSplit(empty, sp.csr_matrix((0, manifest["n_labels"]), dtype=np.float32), [])
    table = _table(folder / split, ["doc_id", "feat_idx", "feat_val", "label_idx"])
    if table.num_rows != info["rows"]:
        raise BundleError(f"{folder / split}: {table.num_rows} rows but the manifest says {info['rows']}")
    what = str(folder / split)
    X = _csr(table.column("feat_idx"), table.column("feat_val"), manifest["n_features"], what)
    Y = _csr(table.column("label_idx"), None, manifest["n_labels"], what)
    return FeatureSplit(X, Y, table.column("doc_id").to_pylist())


def split_parts(bundle: str | Path, split: str = "train") -> tuple[dict[str, Any], list[tuple[Path, int]]]:
    """(manifest, the split's part files with their row counts), read from the Parquet footers only:
    what a driver needs to hand the parts to workers without reading a row itself."""
    folder = Path(bundle)
    manifest = read_manifest(folder)
    info = manifest["splits"].get(split)
    if not isinstance(info, dict) or not isinstance(info.get("rows"), int):
        raise BundleError(f"{folder}: no {split!r} split; it has {sorted(manifest['splits'])}")
    parts = []
    for f in sorted((folder / split).glob("part-*.parquet")) if info["rows"] else []:
        try:
            parts.append((f, pq.ParquetFile(f).metadata.num_rows))
        except (pa.ArrowException, OSError) as e:
            raise BundleError(f"{f}: unreadable parquet ({e})") from None
    if sum(n for _, n in parts) != info["rows"]:
        raise BundleError(f"{folder / split}: {sum(n for _, n in parts)} rows but the manifest says "
                          f"{info['rows']}")
    return manifest, parts


def bundle_digest(bundle: str | Path) -> str:
    """sha256 of the bundle's manifest, which lists every file's checksum and row count: the data's
    fingerprint for checkpoints and MLflow when its rows are never loaded in one place."""
    return hashlib.sha256((Path(bundle) / "manifest.json").read_bytes()).hexdigest()


PART_BATCH_ROWS = 8192
"""Rows decoded at a time when a part file is read in slices: a slice costs its own rows' memory."""


def _read_rows(path: str | Path, columns: list[str], start: int, stop: int | None) -> pa.Table:
    """Rows ``[start, stop)`` of one part file's ``columns``, decoded ``PART_BATCH_ROWS`` at a time:
    memory is the slice's, not the file's."""
    try:
        parquet = pq.ParquetFile(path)
        batches, at = [], 0
        for batch in parquet.iter_batches(batch_size=PART_BATCH_ROWS, columns=columns):
            a, at = at, at + batch.num_rows
            if at > start:
                end = at if stop is None else min(at, stop)
                batches.append(batch.slice(max(start - a, 0), end - max(start, a)))
            if stop is not None and at >= stop:
                break
        schema = pa.schema([parquet.schema_arrow.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)
    except (pa.ArrowException, OSError, KeyError) as e:
        raise BundleError(f"{path}: unreadable parquet ({e})") from None


def load_part(path: str | Path, n_features: int, n_labels: int, start: int = 0,
              stop: int | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """X and Y of rows ``[start, stop)`` of one part file (checked as ``load_split`` checks a split)."""
    table = _read_rows(path, ["feat_idx", "feat_val", "label_idx"], start, stop)
    what = f"{path} (rows {start}..{start + table.num_rows})"
    return (_csr(table.column("feat_idx"), table.column("feat_val"), n_features, what),
            _csr(table.column("label_idx"), None, n_labels, what))


def read_doc_ids(path: str | Path, start: int = 0, stop: int | None = None) -> list[str]:
    """The ``doc_id`` of rows ``[start, stop)`` of one part file."""
    return [str(v) for v in _read_rows(path, ["doc_id"], start, stop).column("doc_id").to_pylist()]


def load_label_names(bundle: str | Path) -> list[str] | None:
    """Label names by index, or None when the input named none (XC BoW)."""
    path = Path(bundle) / "labels.txt"
    if not path.is_file():
        return None
    try:
        names = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not valid UTF-8") from None
    return names[:-1] if names and names[-1] == "" else names


def _by_label(bundle: str | Path, name: str, columns: list[str]) -> tuple[pa.Table, dict[str, Any]]:
    return _table(Path(bundle) / name, columns), read_manifest(bundle)


def _scatter(table: pa.Table, n_rows: int, n_cols: int, idx: str, val: str, what: str) -> sp.csr_matrix:
    """Rows keyed by ``label_idx`` (some labels may be absent) -> (n_rows x n_cols) CSR."""
    part = _csr(table.column(idx), table.column(val), n_cols, what)
    rows = table.column("label_idx").to_numpy()
    P = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))),
                      shape=(n_rows, len(rows)))
    out = sp.csr_matrix(P @ part)
    out.sort_indices()
    return out


def load_pifa(bundle: str | Path) -> sp.csr_matrix:
    """PIFA embeddings (L x D, float32): row l = normalize(sum of label l's training rows)."""
    table, manifest = _by_label(bundle, "pifa", ["label_idx", "feat_idx", "feat_val"])
    return _scatter(table, int(manifest["n_labels"]), int(manifest["n_features"]), "feat_idx", "feat_val",
                    str(Path(bundle) / "pifa"))


def load_cooccurrence(bundle: str | Path) -> sp.csr_matrix:
    """Top-k co-occurrence counts (L x L CSR, at most k entries per row) of the training labels."""
    table, manifest = _by_label(bundle, "label_cooc", ["label_idx", "cooc_idx", "cooc_count"])
    n_labels = int(manifest["n_labels"])
    return _scatter(table, n_labels, n_labels, "cooc_idx", "cooc_count", str(Path(bundle) / "label_cooc"))


def label_frequencies(bundle: str | Path) -> np.ndarray:
    path = Path(bundle) / "label_stats.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["freq"])
    except Exception as e:  # zipfile, zlib and numpy raise their own types on a bad file
        raise BundleError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def input_fingerprint(inputs: list[str]) -> dict[str, Any]:
    """Names, sizes and modification times of the input files (local paths), and their sha256.

    Cheap on any corpus size; a re-run on changed input shows a different fingerprint.
    """
    files: list[dict[str, Any]] = []
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item))] if "://" not in item else []
        if not matches:
            return {"files": None, "sha256": None, "note": f"{item} is not a local path"}
        members = [f for m in matches for f in (
            sorted(f for f in m.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
            if m.is_dir() else [m])]
        for f in members:
            st = os.stat(f)
            files.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"files": files, "sha256": digest}


# writing a bundle without Spark (data that is already vectorised)


def _bounds(indptr: np.ndarray, max_rows: int, max_nnz: int) -> Iterator[tuple[int, int]]:
    """Row ranges [a, b) of at most ``max_rows`` rows and ``max_nnz`` entries (at least one row)."""
    n, a = len(indptr) - 1, 0
    while a < n:
        by_nnz = int(np.searchsorted(indptr, indptr[a] + max_nnz, side="right")) - 1
        b = max(a + 1, min(n, a + max_rows, by_nnz))
        yield a, b
        a = b


def _lists(indptr: np.ndarray, values: np.ndarray, a: int, b: int, kind: pa.DataType) -> pa.ListArray:
    """Rows a..b of a CSR array as an Arrow list column, straight from its offsets (no Python lists)."""
    start, stop = int(indptr[a]), int(indptr[b])
    offsets = pa.array((indptr[a:b + 1] - start).astype(np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values[start:stop], kind))


def _doc_ids(prefix: str, a: int, b: int) -> pa.Array:
    rows = pc.cast(pa.array(np.arange(a, b, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), rows, "")


def write_split(folder: Path, prefix: str, X: sp.csr_matrix, Y: sp.csr_matrix, max_rows: int,
                 max_nnz: int) -> dict[str, int]:
    """Shards ``part-NNNNN.parquet`` of one split in row order, with ``SHARD_COLUMNS`` (pyarrow, no Spark)."""
    n = X.shape[0]
    if n:  # as Spark: no folder for an empty split (the loader reads the row count from the manifest)
        folder.mkdir()
    for part, (a, b) in enumerate(_bounds(X.indptr + Y.indptr, max_rows, max_nnz)):
        table = pa.table({
            "doc_id": _doc_ids(prefix, a, b),
            "feat_idx": _lists(X.indptr, X.indices.astype(np.int32, copy=False), a, b, pa.int32()),
            "feat_val": _lists(X.indptr, X.data.astype(np.float32, copy=False), a, b, pa.float32()),
            "label_idx": _lists(Y.indptr, Y.indices.astype(np.int32, copy=False), a, b, pa.int32()),
        })
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    row_nnz = np.diff(X.indptr)
    return {"rows": n, "feat_nnz": int(X.nnz), "label_nnz": int(Y.nnz),
            "empty_rows": int(np.count_nonzero(row_nnz == 0)), "unseen_labels": 0}


def write_pifa(folder: Path, X: sp.csr_matrix, Y: sp.csr_matrix, max_rows: int, max_nnz: int) -> int:
    """Rows of ``xmc.core.tree.pifa`` (normalize(Y^T X)), computed in blocks of labels so memory stays
    bounded; labels with no training document have no row (as the Spark job). Returns the nnz."""
    folder.mkdir()
    Yc = Y.tocsc()
    row_nnz = np.diff(X.indptr).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(row_nnz[Yc.indices])])
    cost = np.concatenate([[0], np.cumsum(cum[Yc.indptr[1:]] - cum[Yc.indptr[:-1]])])  # upper bound of nnz
    nnz = 0
    for part, (a, b) in enumerate(_bounds(cost, max_rows, max_nnz)):
        Z = pifa(X, Yc[:, a:b])
        keep = np.flatnonzero(np.diff(Z.indptr))
        Z = Z[keep]
        table = pa.table({
            "label_idx": pa.array((keep + a).astype(np.int32), pa.int32()),
            "feat_idx": _lists(Z.indptr, Z.indices.astype(np.int32, copy=False), 0, Z.shape[0], pa.int32()),
            "feat_val": _lists(Z.indptr, Z.data, 0, Z.shape[0], pa.float32()),
        })
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
        nnz += Z.nnz
    return nnz


def write_bundle(folder: str | Path, X: sp.csr_matrix, Y: sp.csr_matrix, *, max_rows: int = 100_000,
                 max_nnz: int = 20_000_000, label_names: list[str] | None = None) -> dict[str, Any]:
    """A bundle of a train split that is already vectorised (no Spark, no PIFA): what ``xmc train
    --data`` reads, for matrices in hand (tests, benchmarks). ``folder`` must not exist yet."""
    from xmc.io.files import sha256

    folder = Path(folder)
    folder.mkdir(parents=True)
    split = write_split(folder / "train", "trn-", sp.csr_matrix(X), sp.csr_matrix(Y), max_rows, max_nnz)
    np.savez(folder / "label_stats.npz", freq=np.bincount(sp.csr_matrix(Y).indices,
                                                          minlength=Y.shape[1]).astype(np.int64))
    if label_names is not None:
        (folder / "labels.txt").write_text("".join(n + "\n" for n in label_names), encoding="utf-8")
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "n_features": int(X.shape[1]),
                "n_labels": int(Y.shape[1]), "splits": {"train": split}, "shard_columns": dict(SHARD_COLUMNS),
                "features": "given (matrices)", "params": {"max_rows": max_rows, "max_nnz": max_nnz},
                "pifa": None, "label_cooc": None, "bad_records": {"total": 0},
                "files": {f.name: sha256(f) for f in sorted(folder.iterdir()) if f.is_file()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
