"""Public XMC benchmarks (PECOS ``xmc-base`` TF-IDF archives) -> features bundles for ``xmc train --data``.

    fetch:  <mirror or archive.org>/<name>.tar.gz -> <cache>/<name>.tar.gz   (temp file, sha256, rename)
    verify: against a pinned sha256 (--sha256, or the registry), else the one recorded in
            <cache>/checksums.json on the first fetch (trust on first use; said so, every time)
    unpack: one streaming pass; every member checked (no links, absolute paths or ``..``), only
            Y.trn/Y.tst/output-items.txt and <features>/X.trn/X.tst.npz are extracted
    check:  shapes agree between the files and with the published facts in ``REGISTRY``
    write:  the layout of ``xmc.io.features`` with pyarrow (train/test shards, labels.txt,
            label_stats.npz, pifa/), in one atomic folder; no Spark (the input is already TF-IDF)

The archives are the ones the PECOS README downloads
(``wget https://archive.org/download/pecos-dataset/xmc-base/eurlex-4k.tar.gz``); inside, the
layout is ``xmc-base/<name>/{Y.trn.npz, Y.tst.npz, X.trn.txt, X.tst.txt, output-items.txt}`` and
``xmc-base/<name>/tfidf-attnxml/{X.trn.npz, X.tst.npz}`` (scipy CSR). The unpacker finds the
folder holding ``Y.trn.npz`` wherever it is, so a repacked archive without ``xmc-base/`` works too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from xmc.errors import BundleError, ParamError
from xmc.ops.datasets.archive import _read_checksums, obtain_archive
from xmc.ops.datasets.convert import build_bundle
from xmc.ops.datasets.registry import (  # noqa: F401  (the CLI and tests read these through this module)
    CACHE_ENV,
    DEFAULT_FEATURES,
    MIRROR_ENV,
    REGISTRY,
    DatasetInfo,
    FetchError,
    FetchResult,
    cache_dir,
    resolve,
    source_url,
)

log = logging.getLogger("xmc.datasets")

# ---------------------------------------------------------------------------------------------
# the whole fetch


def _current_bundle(out: Path, digest: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of ``out`` when it is a bundle already built from this archive with these params."""
    from xmc.io.features import read_manifest

    try:
        manifest = read_manifest(out)
    except BundleError:
        return None
    same = (manifest.get("input", {}).get("archive_sha256") == digest
            and {k: manifest.get("params", {}).get(k) for k in ("features", "pifa")} == params)
    return manifest if same else None


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not a features bundle (``--out .`` must not wipe a project)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ParamError(f"--out {out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    from xmc.io.features import FORMAT

    try:
        fmt = json.loads((out / "manifest.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        raise ParamError(f"--out {out}: a non-empty folder that is not a features bundle; refusing to "
                         "replace it (pick a new folder)")


def fetch(
    name: str, out: str | Path, *, cache: str | Path | None = None, mirror: str | None = None,
    sha256_pin: str | None = None, features: str = DEFAULT_FEATURES, pifa: bool = True,
    check_facts: bool = True, force: bool = False, info: DatasetInfo | None = None, timeout: float = 60.0,
) -> FetchResult:
    """Download (or reuse), verify and unpack benchmark ``name`` into the features bundle ``out``.

    ``info`` replaces the registry entry (a dataset the registry does not know, or tests). The
    bundle is rebuilt only when the archive or the params changed, or with ``force``.
    """
    info = info or resolve(name, mirror)
    out = Path(out)
    _check_out(out)
    if not features or "/" in features or features in (".", ".."):
        raise ParamError(f"--features {features!r}: give a folder name such as {DEFAULT_FEATURES}")
    folder = cache_dir(cache)
    url = source_url(info, mirror)
    archive, digest, checksum, reused = obtain_archive(info, url, folder, sha256_pin, timeout)
    current = None if force else _current_bundle(out, digest, {"features": features, "pifa": pifa})
    if current is not None:
        log.info(f"{out} is already the bundle of this archive (--force rebuilds it)")
        return FetchResult(info.name, out, archive, digest, checksum, reused, True, current)
    manifest = build_bundle(archive, out, info, archive_sha256=digest, checksum=checksum, url=url,
                            features=features, pifa=pifa, check_facts=check_facts)
    log.info(f"wrote {out}; train with `xmc train --data {out} --model MODEL_DIR`")
    return FetchResult(info.name, out, archive, digest, checksum, reused, False, manifest)


def listing(cache: str | Path | None = None) -> list[dict[str, Any]]:
    """The registry with what this machine has: cached archive size and whether its sha256 is recorded."""
    folder = cache_dir(cache)
    records = _read_checksums(folder) if folder.is_dir() else {}
    rows = []
    for info in REGISTRY.values():
        path = folder / info.archive_name
        rows.append({"name": info.name, "labels": info.n_labels, "train": info.n_train, "test": info.n_test,
                     "features": info.n_features, "url": info.default_url(),
                     "cached_bytes": path.stat().st_size if path.is_file() else None,
                     "sha256": "pinned" if info.sha256 else "recorded" if info.archive_name in records
                     else None})
    return rows
