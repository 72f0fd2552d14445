"""Model bundle: a self-describing folder of JSON and ``.npz`` arrays. Never pickle.

    manifest.json     format, schema version, params, shapes, per-file sha256
    tree.npz          parents of every layer, copy -> label map
    layer_<t>.npz     layer t's weights (CSC arrays), bias row last
    labels.npz        training label counts (propensities for PSP@k)
    features.npz      optional feature weights applied before the rows are normalised again
    label_names.txt   optional label vocabulary, one name per line
    <extra>/...       optional folders stored with the model, e.g. ``vectorizer/`` (JSON + npz)

Loading checks format, version, checksums and every shape, so a corrupt or foreign folder
fails with a clear message instead of predicting garbage. A bundle is written atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.core.feature_pairs import column_count
from xmc.core.tree import LabelTree
from xmc.errors import BundleError
from xmc.io.files import atomic_dir, manifest_format_is, read_manifest_file, sha256, verify_checksums

FORMAT = "xmc-model"
SCHEMA_VERSION = 1


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy stubs mistype **kwds


def load_npz(folder: Path, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of ``folder/name``, every one read in full; any failure is a BundleError."""
    try:
        with np.load(folder / name, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, zlib and numpy raise their own types on a truncated file
        raise BundleError(f"{folder / name}: unreadable ({type(e).__name__}: {e})") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise BundleError(f"{folder / name}: missing array(s) {missing}")
    return arrays


def _finite(folder: Path, name: str, values: np.ndarray) -> None:
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise BundleError(f"{folder / name}: weights hold NaN, inf or non-numbers: the model is corrupt")


def save_bundle(
    path: str | Path,
    *,
    tree: LabelTree,
    weights: list[sp.csc_matrix],
    n_features: int,
    label_counts: np.ndarray,
    n_train: int,
    label_names: list[str] | None,
    meta: dict[str, Any],
    feature_weights: np.ndarray | None = None,
    pairs: np.ndarray | None = None,
    extra_dirs: Mapping[str, str | Path] | None = None,
) -> None:
    """Write the bundle atomically (a reader never sees a half-written model).

    ``extra_dirs`` maps a folder name in the bundle to a source folder copied there (the text
    vectorizer a model predicts raw text with); its files are checksummed like the others.
    ``pairs``: the sorted keys ``i * n_features + j`` of the pair columns, stored as their two features.
    """
    with atomic_dir(path, owned=manifest_format_is(FORMAT), what="an xmc model folder") as tmp:
        for name, source in (extra_dirs or {}).items():
            shutil.copytree(source, tmp / name)
        _save_npz(tmp / "tree.npz", copy_label=tree.copy_label,
                  **{f"parent_{t}": p for t, p in enumerate(tree.parents)})
        for t, W in enumerate(weights):
            _save_npz(tmp / f"layer_{t}.npz", data=W.data, indices=W.indices, indptr=W.indptr,
                      shape=np.array(W.shape, dtype=np.int64))
        _save_npz(tmp / "labels.npz", label_counts=label_counts.astype(np.int64))
        if feature_weights is not None:
            _save_npz(tmp / "features.npz", weights=np.asarray(feature_weights, dtype=np.float32))
        if pairs is not None:
            _save_npz(tmp / "pairs.npz", first=pairs // n_features, second=pairs % n_features)
        if label_names is not None:
            (tmp / "label_names.txt").write_text("".join(name + "\n" for name in label_names))
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            **meta,
            "n_features": n_features,
            **({} if pairs is None else {"n_pairs": len(pairs)}),
            "n_labels": tree.n_labels,
            "n_train": n_train,
            "layers": [
                {"n_parents": tree.n_parents(t), "n_children": int(W.shape[1]), "nnz": int(W.nnz)}
                for t, W in enumerate(weights)
            ],
            "files": {f.relative_to(tmp).as_posix(): sha256(f)
                      for f in sorted(tmp.rglob("*")) if f.is_file()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict[str, Any]:
    return read_manifest_file(path, fmt=FORMAT, version=SCHEMA_VERSION, kind="an xmc model", noun="model",
                              fix=f"train one with `xmc train ... --model {path}`")


def load_bundle(path: str | Path) -> dict[str, Any]:
    """Read and fully validate a bundle; returns its parts (tree, weights, counts, names, manifest)."""
    folder = Path(path)
    manifest = read_manifest(folder)
    where = folder / "manifest.json"
    try:
        n_features = int(manifest["n_features"])
        n_labels = int(manifest["n_labels"])
        n_train = int(manifest["n_train"])
        layer_meta = list(manifest["layers"])
        n_children = [int(meta["n_children"]) for meta in layer_meta]
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{where}: missing or bad field ({type(e).__name__}: {e})") from None
    if not layer_meta or min(n_features, n_labels, n_train) < 0:
        raise BundleError(f"{where}: bad sizes (layers, n_features, n_labels, n_train)")
    required = ("tree.npz", "labels.npz", *(f"layer_{t}.npz" for t in range(len(layer_meta))))
    verify_checksums(folder, manifest.get("files"), required=required)
    pairs = _pairs(folder, manifest, n_features)
    n_columns = column_count(n_features, pairs)
    tz = load_npz(folder, "tree.npz", ("copy_label", *(f"parent_{t}" for t in range(len(layer_meta)))))
    try:
        parents = tuple(tz[f"parent_{t}"].astype(np.int64) for t in range(len(layer_meta)))
        tree = LabelTree(parents, tz["copy_label"].astype(np.int64), n_labels)
    except (ValueError, TypeError, IndexError) as e:
        raise BundleError(f"{folder}/tree.npz: invalid label tree ({e})") from None
    weights = []
    for t in range(len(layer_meta)):
        name = f"layer_{t}.npz"
        z = load_npz(folder, name, ("data", "indices", "indptr", "shape"))
        expected = (n_columns + 1, len(parents[t]))
        shape = tuple(int(v) for v in np.asarray(z["shape"]).ravel())
        if shape != expected or n_children[t] != expected[1]:
            raise BundleError(f"{folder / name}: shape {shape}, expected {expected}")
        try:
            W = sp.csc_matrix((z["data"], z["indices"], z["indptr"]), shape=expected)
            W.check_format(full_check=True)
        except (ValueError, TypeError, IndexError, OverflowError) as e:
            raise BundleError(f"{folder / name}: invalid sparse matrix ({e})") from None
        _finite(folder, name, W.data)
        weights.append(W)
    counts = load_npz(folder, "labels.npz", ("label_counts",))["label_counts"]
    if counts.shape != (n_labels,) or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise BundleError(f"{folder}/labels.npz: label_counts must be {n_labels} counts >= 0, "
                          f"got shape {tuple(int(v) for v in counts.shape)} of {counts.dtype}")
    feature_weights = None
    if "features.npz" in manifest.get("files", {}):  # checksummed above like every listed file
        feature_weights = load_npz(folder, "features.npz", ("weights",))["weights"]
        if feature_weights.shape != (n_columns,) or not np.issubdtype(feature_weights.dtype, np.floating) \
                or not np.all(np.isfinite(feature_weights)) or (feature_weights < 0).any():
            shape = tuple(int(v) for v in feature_weights.shape)
            raise BundleError(f"{folder}/features.npz: weights must be {n_columns} finite numbers >= 0, "
                              f"got shape {shape} of {feature_weights.dtype}")
    names = None
    if (folder / "label_names.txt").exists():
        try:
            names = (folder / "label_names.txt").read_text(encoding="utf-8").split("\n")[:-1]
        except UnicodeDecodeError:
            raise BundleError(f"{folder}/label_names.txt: not valid UTF-8") from None
        if len(names) != n_labels:
            raise BundleError(f"{folder}/label_names.txt: {len(names)} names for {n_labels} labels")
    return {"manifest": manifest, "tree": tree, "weights": weights, "label_counts": counts,
            "n_train": n_train, "n_features": n_features, "label_names": names,
            "feature_weights": feature_weights, "pairs": pairs}


def _pairs(folder: Path, manifest: dict[str, Any], n_features: int) -> np.ndarray | None:
    """The pair columns' sorted keys ``i * n_features + j`` from pairs.npz (checksummed already), or None."""
    if "pairs.npz" not in manifest.get("files", {}):
        return None
    z = load_npz(folder, "pairs.npz", ("first", "second"))
    first, second = np.asarray(z["first"]), np.asarray(z["second"])
    ok = (first.ndim == 1 and first.shape == second.shape and np.issubdtype(first.dtype, np.integer)
          and np.issubdtype(second.dtype, np.integer) and manifest.get("n_pairs") == len(first))
    keys = first.astype(np.int64) * n_features + second.astype(np.int64) if ok else None
    if keys is None or (len(keys) > 0 and (first.min() < 0 or (second <= first).any()
                                           or second.max() >= n_features or (np.diff(keys) <= 0).any())):
        raise BundleError(f"{folder}/pairs.npz: 'first' and 'second' must be manifest's n_pairs feature ids "
                          f"0 <= first < second < {n_features}, each pair once, sorted")
    return keys
