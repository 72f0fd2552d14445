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
    vectorizer/              the fitted text transform (text input only), see xmc.vectorizer

The loader builds CSR matrices straight from the Arrow list columns (offsets and flattened
values), never through text, and checks row counts, index ranges and finiteness.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from xmc.errors import BundleError
from xmc.fsutil import read_manifest_file, verify_checksums

FORMAT = "xmc-features"
SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")


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
    if verify:
        verify_checksums(bundle, manifest.get("files", {}))
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


def load_label_names(bundle: str | Path) -> list[str] | None:
    """Label names by index, or None when the input named none (XC BoW)."""
    path = Path(bundle) / "labels.txt"
    if not path.is_file():
        return None
    names = path.read_text(encoding="utf-8").split("\n")
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
    with np.load(Path(bundle) / "label_stats.npz", allow_pickle=False) as z:
        return np.asarray(z["freq"])


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
