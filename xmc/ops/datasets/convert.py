"""An unpacked archive -> a features bundle (the layout of ``xmc.io.features``), written atomically."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from xmc.errors import DataFormatError
from xmc.io.features import SHARD_COLUMNS, write_pifa, write_split
from xmc.io.files import atomic_dir, manifest_format_is, sha256
from xmc.ops.datasets.archive import _check_shapes, _read, unpack
from xmc.ops.datasets.registry import DEFAULT_FEATURES, DatasetInfo

log = logging.getLogger("xmc.datasets")


def _label_names(path: Path | None, n_labels: int, where: str) -> list[str] | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"not UTF-8 text ({e})", path=where) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    names = [line.removesuffix("\r") for line in lines]
    if len(names) != n_labels:
        raise DataFormatError(f"{len(names)} label names for {n_labels} label columns of Y.trn.npz",
                              path=where)
    return names


def build_bundle(
    archive: Path, out: str | Path, info: DatasetInfo, *, archive_sha256: str, checksum: str, url: str,
    features: str = DEFAULT_FEATURES, pifa: bool = True, check_facts: bool = True,
    max_rows: int = 100_000, max_nnz: int = 20_000_000,
) -> dict[str, Any]:
    """Unpack ``archive`` (already verified) and write the features bundle ``out`` atomically; the manifest.

    Shards hold at most ``max_rows`` rows and ``max_nnz`` non-zeros each, so memory beyond the
    matrices themselves stays bounded whatever the dataset.
    """
    from xmc.io.features import FORMAT, SCHEMA_VERSION

    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.unpack.", dir=archive.parent))
    try:
        unpacked = unpack(archive, staging, features)
        x_dir = unpacked.folder / features
        if features not in unpacked.feature_folders or not (x_dir / "X.trn.npz").is_file():
            have = ", ".join(unpacked.feature_folders) or "none"
            raise DataFormatError(f"no feature folder {features!r} holding X.trn.npz beside Y.trn.npz; "
                                  f"the archive has: {have} (pick one with --features NAME)", path=archive)
        seconds["unpack"] = round(time.perf_counter() - t0, 3)
        files = {"X.trn": x_dir / "X.trn.npz", "X.tst": x_dir / "X.tst.npz",
                 "Y.trn": unpacked.folder / "Y.trn.npz", "Y.tst": unpacked.folder / "Y.tst.npz"}
        where = {k: f"{archive}:{unpacked.member.get(p, p.name)}" for k, p in files.items()}
        m = {k: _read(unpacked, p, archive, binary=k.startswith("Y")) for k, p in files.items()}
        checked = _check_shapes(m, where, info, check_facts)
        d, n_labels = m["X.trn"].shape[1], m["Y.trn"].shape[1]
        items = unpacked.folder / "output-items.txt"
        names = _label_names(items if items.is_file() else None, n_labels,
                             f"{archive}:{unpacked.member.get(items, items.name)}")
        seconds["read_check"] = round(time.perf_counter() - t0 - seconds["unpack"], 3)
        against = f" (checked against the registry: {', '.join(checked)})" if checked else ""
        log.info(f"{info.name}: {m['X.trn'].shape[0]} train / {m['X.tst'].shape[0]} test documents, "
             f"{d} features, {n_labels} labels{against}")
        with atomic_dir(out, owned=manifest_format_is(FORMAT), what="a features bundle") as tmp:
            t1 = time.perf_counter()
            splits = {"train": write_split(tmp / "train", "trn-", m["X.trn"], m["Y.trn"], max_rows, max_nnz),
                      "test": write_split(tmp / "test", "tst-", m["X.tst"], m["Y.tst"], max_rows, max_nnz)}
            if names is not None:
                (tmp / "labels.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
            freq = np.bincount(m["Y.trn"].indices, minlength=n_labels).astype(np.int64)
            np.savez(tmp / "label_stats.npz", freq=freq)
            seconds["write_shards"] = round(time.perf_counter() - t1, 3)
            pifa_nnz = None
            if pifa:
                t1 = time.perf_counter()
                pifa_nnz = write_pifa(tmp / "pifa", m["X.trn"], m["Y.trn"], max_rows, max_nnz)
                seconds["pifa"] = round(time.perf_counter() - t1, 3)
            seconds["total"] = round(time.perf_counter() - t0, 3)
            manifest = {
                "format": FORMAT, "schema_version": SCHEMA_VERSION,
                "input": {"dataset": info.name, "url": url, "archive": str(archive),
                          "archive_sha256": archive_sha256, "checksum": checksum,
                          "members": {k: unpacked.member.get(p, p.name) for k, p in files.items()}},
                "params": {"features": features, "pifa": pifa, "check_facts": check_facts,
                           "max_rows": max_rows, "max_nnz": max_nnz},
                "features": f"given (PECOS xmc-base {features})", "normalization": "as distributed",
                "n_features": int(d), "n_labels": int(n_labels), "splits": splits,
                "shard_columns": dict(SHARD_COLUMNS),
                "doc_ids": "trn-<row> / tst-<row>: the row in X.trn.npz / X.tst.npz",
                "label_order": "the archive's label columns (output-items.txt order), not by frequency",
                "pifa": {"nnz": pifa_nnz} if pifa else None,
                "label_cooc": None,  # not computed here; nothing in training reads it
                "registry": {**{k: v for k, v in asdict(info).items() if k not in ("name", "sources")},
                             "checked": checked, "sources": list(info.sources)},
                "bad_records": {"total": 0},
                "seconds": seconds,
                "files": {f.name: sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()},
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
