"""Public XMC benchmarks (PECOS ``xmc-base`` TF-IDF archives) -> features bundles for ``xmc train --data``.

    fetch:  <mirror or archive.org>/<name>.tar.gz -> <cache>/<name>.tar.gz   (temp file, sha256, rename)
    verify: against a pinned sha256 (--sha256, or the registry), else the one recorded in
            <cache>/checksums.json on the first fetch (trust on first use; said so, every time)
    unpack: one streaming pass; every member checked (no links, absolute paths or ``..``), only
            Y.trn/Y.tst/output-items.txt and <features>/X.trn/X.tst.npz are extracted
    check:  shapes agree between the files and with the published facts in ``REGISTRY``
    write:  the layout of ``xmc.spark.bundle`` with pyarrow (train/test shards, labels.txt,
            label_stats.npz, pifa/), in one atomic folder; no Spark (the input is already TF-IDF)

The archives are the ones the PECOS README downloads
(``wget https://archive.org/download/pecos-dataset/xmc-base/eurlex-4k.tar.gz``); inside, the
layout is ``xmc-base/<name>/{Y.trn.npz, Y.tst.npz, X.trn.txt, X.tst.txt, output-items.txt}`` and
``xmc-base/<name>/tfidf-attnxml/{X.trn.npz, X.tst.npz}`` (scipy CSR). The unpacker finds the
folder holding ``Y.trn.npz`` wherever it is, so a repacked archive without ``xmc-base/`` works too.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from xmc.errors import BundleError, DataFormatError, ParamError, XMCError
from xmc.fsutil import atomic_dir, atomic_file, sha256
from xmc.progress import progress_bar
from xmc.sparse import csr, normalize_rows

BASE_URL = "https://archive.org/download/pecos-dataset/xmc-base"
DEFAULT_FEATURES = "tfidf-attnxml"
MIRROR_ENV = "XMC_DATASETS_MIRROR"
CACHE_ENV = "XMC_CACHE_DIR"
CHECKSUMS = "checksums.json"
# The members we extract (by file name); raw text (X.*.txt, often the largest files) is skipped.
LABEL_FILES = ("Y.trn.npz", "Y.tst.npz", "output-items.txt")
FEATURE_FILES = ("X.trn.npz", "X.tst.npz")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Sources of the facts below. Train/test/label counts are the AttentionXML splits that PECOS
# redistributes; D is the TF-IDF dimension of the PECOS archives.
_SPMM = ("amzn/pecos examples/spmm/README.md, 'Data Statistics' (N train, D, L of these very "
         "archives)")
_XT = "X-Transformer (Chang et al., KDD'20), Table 2 (n_trn, n_tst, L)"
_ATTN = "AttentionXML (You et al., NeurIPS'19), Table 1, as given in the task brief (not re-checked)"


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about one benchmark before downloading it. ``None`` = unknown: that check is skipped.

    ``sha256`` pins the archive; it is None for every built-in entry because no published
    checksum of these archives could be found (archive.org lists md5/sha1 in its own metadata,
    which an offline machine cannot read), so fetch falls back to trust on first use.
    """

    name: str
    url: str | None = None
    n_labels: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    n_features: int | None = None
    sha256: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def archive_name(self) -> str:
        return f"{self.name}.tar.gz"

    def default_url(self) -> str:
        return self.url or f"{BASE_URL}/{self.archive_name}"


REGISTRY: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("eurlex-4k", n_labels=3_956, n_train=15_449, n_test=3_865, n_features=186_104,
                sources=(_SPMM, _XT)),
    DatasetInfo("wiki10-31k", n_labels=30_938, n_train=14_146, n_test=6_616, n_features=101_938,
                sources=(_SPMM, _XT)),
    DatasetInfo("amazoncat-13k", n_labels=13_330, n_train=1_186_239, n_test=306_782, n_features=203_882,
                sources=(_SPMM, _XT)),
    DatasetInfo("wiki-500k", n_labels=501_070, n_train=1_779_881, n_test=769_421, n_features=2_381_304,
                sources=(_SPMM, _XT)),
    DatasetInfo("amazon-670k", n_labels=670_091, n_train=490_449, n_test=153_025, n_features=135_909,
                sources=(_SPMM, _ATTN + " for n_test")),
    DatasetInfo("amazon-3m", n_labels=2_812_281, n_train=1_717_899, n_test=742_507, n_features=337_067,
                sources=(_SPMM, _ATTN + " for n_test")),
)}


class FetchError(XMCError):
    """An archive could not be downloaded or failed its checksum; the message says what to do."""


@dataclass
class FetchResult:
    """What ``fetch`` did: the bundle, the archive it came from and how that archive was verified."""

    name: str
    bundle: Path
    archive: Path
    sha256: str
    checksum: str
    reused_archive: bool
    reused_bundle: bool
    manifest: dict[str, Any] = field(repr=False)


def _log(msg: str) -> None:
    print(f"xmc datasets: {msg}", file=sys.stderr, flush=True)


def cache_dir(explicit: str | Path | None = None) -> Path:
    """``explicit``, else $XMC_CACHE_DIR, else ~/.cache/xmc/datasets (XDG_CACHE_HOME respected)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "xmc" / "datasets"


def resolve(name: str, mirror: str | None = None) -> DatasetInfo:
    """The registry entry of ``name``; an unknown name only with a mirror (nothing can be checked)."""
    if not _NAME.match(name):
        raise ParamError(f"dataset name {name!r} is invalid: lower-case letters, digits, '.', '_', '-'")
    if name in REGISTRY:
        return REGISTRY[name]
    if not (mirror or os.environ.get(MIRROR_ENV)):
        raise ParamError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)} "
                         f"(any other name needs --mirror holding {name}.tar.gz)")
    _log(f"warning: {name!r} is not in the registry: no published shape to check it against")
    return DatasetInfo(name)


def source_url(info: DatasetInfo, mirror: str | None = None) -> str:
    """Where the archive comes from: ``<mirror>/<name>.tar.gz`` when a mirror (or $XMC_DATASETS_MIRROR)
    is set, a local folder or any URL urllib opens; else the registry URL."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if not mirror:
        return info.default_url()
    if "://" in mirror:
        return f"{mirror.rstrip('/')}/{urllib.parse.quote(info.archive_name)}"
    return (Path(mirror).expanduser().resolve() / info.archive_name).as_uri()


# ---------------------------------------------------------------------------------------------
# download and checksums


def _read_checksums(cache: Path) -> dict[str, Any]:
    path = cache / CHECKSUMS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"corrupt checksum record ({e}); fix or delete it (the next fetch then "
                              "records the archives' checksums again)", path=path) from None
    archives = data.get("archives") if isinstance(data, dict) else None
    return archives if isinstance(archives, dict) else {}


def _record_checksum(cache: Path, archive: str, digest: str, size: int, url: str) -> None:
    records = _read_checksums(cache)
    records[archive] = {"sha256": digest, "size": size, "url": url,
                        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    with atomic_file(cache / CHECKSUMS) as tmp:
        tmp.write_text(json.dumps({"version": 1, "note": "sha256 of each archive as first downloaded "
                                   "(trust on first use); later fetches are checked against it",
                                   "archives": records}, indent=2, sort_keys=True) + "\n")


def _unreachable(url: str, name: str, reason: object) -> FetchError:
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        return FetchError(f"{path}: cannot read the archive ({reason}); the mirror folder must hold "
                          f"{name}.tar.gz")
    host = urllib.parse.urlparse(url).netloc or url
    return FetchError(
        f"could not reach {url} ({reason}): this machine may be offline or unable to reach {host}. "
        f"Download the archive elsewhere (e.g. `wget {url}`), put it in a folder and run "
        f"`xmc datasets fetch {name} --mirror FOLDER` (or set {MIRROR_ENV}=FOLDER); "
        "a file:// or http(s) base URL works as a mirror too")


def _download(url: str, dest: Path, name: str, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into ``dest`` (created), hashing as it goes; returns (sha256, bytes)."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http(s) and file mirrors)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: the server answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise _unreachable(url, name, getattr(e, "reason", e)) from None
    h, done = hashlib.sha256(), 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else 0
        mib = float(1 << 20)
        try:
            with open(dest, "wb") as f, progress_bar(total=math.ceil(total / mib), desc=f"{name}.tar.gz",
                                                     unit="MiB") as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    done += len(block)
                    bar.update(len(block) / mib)
        except (OSError, urllib.error.URLError) as e:  # socket reset or timeout mid-transfer
            raise FetchError(f"{url}: download interrupted after {done} bytes ({e}); run the command "
                             "again") from None
    if total and done != total:
        raise FetchError(f"{url}: download truncated: {done} of {total} bytes; run the command again")
    return h.hexdigest(), done


def _mismatch(what: str | Path, expected: str, got: str, source: str) -> FetchError:
    return FetchError(f"{what}: sha256 mismatch: expected {expected} ({source}), got {got}. "
                      "The file is corrupt or not the published archive; it was removed")


def obtain_archive(
    info: DatasetInfo, url: str, cache: Path, pin: str | None = None, timeout: float = 60.0,
) -> tuple[Path, str, str, bool]:
    """The verified archive in the cache: (path, sha256, how it was verified, reused from cache).

    The expected checksum is ``pin`` (--sha256), else the registry's, else the one recorded on
    the first fetch. A cached file that does not match is fetched again; a download that does
    not match is deleted and the fetch fails (naming the file, the expected and the actual sum).
    """
    if pin is not None and not _HEX64.match(pin.lower()):
        raise ParamError(f"--sha256 {pin!r} is not a sha256 (64 hex digits)")
    pinned = pin.lower() if pin else info.sha256
    pin_source = "--sha256" if pin else "pinned in the registry"
    cache.mkdir(parents=True, exist_ok=True)
    record = _read_checksums(cache).get(info.archive_name)
    if not isinstance(record, dict):
        record = {}
    recorded = record.get("sha256")
    expected = pinned or recorded
    source = pin_source if pinned else f"recorded in {cache / CHECKSUMS} on first fetch"
    path = cache / info.archive_name
    reused = False
    if path.is_file():
        got = sha256(path)
        if expected is None or got == expected:
            reused = True
            digest, size = got, path.stat().st_size
            _log(f"using the cached {path}")
        else:
            _log(f"the cached {path} does not match the expected sha256 ({source}): fetching it again")
            path.unlink()
    if not reused:
        _log(f"downloading {url}")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{info.archive_name}.", suffix=".part", dir=cache)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            digest, size = _download(url, tmp, info.name, timeout)
            if expected is not None and digest != expected:
                raise _mismatch(f"{url} (downloaded to {path})", expected, digest, source)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    if pinned:
        status = f"verified: sha256 {pin_source}"
        if recorded != digest:
            _record_checksum(cache, info.archive_name, digest, size, url)
    elif recorded:
        status = (f"verified against {cache / CHECKSUMS} (recorded {record.get('recorded_at', '?')}); "
                  "not pinned: trust on first use")
    else:
        _record_checksum(cache, info.archive_name, digest, size, url)
        status = (f"not pinned: sha256 {digest} recorded now in {cache / CHECKSUMS} "
                  "(trust on first use; later fetches are checked against it)")
    _log(f"{info.archive_name}: {status}")
    return path, digest, status, reused


# ---------------------------------------------------------------------------------------------
# unpack


@dataclass
class _Unpacked:
    folder: Path                  # local folder holding Y.trn.npz
    member: dict[Path, str]       # local file -> its name in the archive (for messages)
    feature_folders: list[str]    # every folder (relative to the dataset folder) holding X.trn.npz


def _posix(name: str) -> str:
    """A member name without "." parts or stray slashes ("./a//b/" -> "a/b")."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _check_member(m: tarfile.TarInfo, staging: Path, archive: Path) -> None:
    """Refuse links, devices, absolute paths and ``..`` anywhere (even when it stays inside the
    destination), then anything else tarfile's "data" filter refuses."""
    if not (m.isfile() or m.isdir()):
        kind = "link" if (m.issym() or m.islnk()) else "special file"
        raise DataFormatError(f"unsafe archive member {m.name!r} ({kind}): refused (nothing from the "
                              "archive is kept)", path=archive)
    if m.name.startswith("/") or ".." in m.name.split("/"):
        raise DataFormatError(f"unsafe archive member {m.name!r} (absolute path or '..'): refused "
                              "(nothing from the archive is kept)", path=archive)
    try:
        tarfile.data_filter(m, str(staging))
    except tarfile.FilterError as e:
        raise DataFormatError(f"unsafe archive member {m.name!r} ({e}): refused (nothing from the "
                              "archive is kept)", path=archive) from None


def unpack(archive: Path, staging: Path, features: str) -> _Unpacked:
    """Extract the label files and ``<features>/X.*.npz`` in one streaming pass of the archive.

    Every member is checked before anything is done with it, the ones not needed too, so a
    tampered archive is refused as a whole (the caller deletes ``staging``). Raw text and other
    feature folders are skipped (never written to disk).
    """
    extracted: list[tuple[Path, str]] = []
    x_parents: list[str] = []
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for m in tar:
                _check_member(m, staging, archive)
                if not m.isfile():
                    continue
                name = _posix(m.name)
                parent, _, base = name.rpartition("/")
                if base == "X.trn.npz":
                    x_parents.append(parent)
                if base in LABEL_FILES or (base in FEATURE_FILES and parent.rpartition("/")[2] == features):
                    tar.extract(m, staging, filter="data")
                    extracted.append((staging / name, name))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataFormatError(f"not a readable tar archive ({type(e).__name__}: {e})", path=archive) from None
    holders = sorted({n.rpartition("/")[0] for _, n in extracted if n.rpartition("/")[2] == "Y.trn.npz"})
    if not holders:
        raise DataFormatError("no Y.trn.npz in the archive: not a PECOS xmc-base dataset", path=archive)
    if len(holders) > 1:
        raise DataFormatError(f"several folders hold Y.trn.npz: {holders}; expected one dataset",
                              path=archive)
    root = holders[0]
    feature_folders = sorted({p[len(root) + 1:] if root else p for p in x_parents
                              if p != root and (not root or p.startswith(root + "/"))})
    return _Unpacked(staging / root, dict(extracted), feature_folders)


# ---------------------------------------------------------------------------------------------
# read and check


def _read(unpacked: _Unpacked, path: Path, archive: Path, *, binary: bool) -> sp.csr_matrix:
    from xmc.data.npz import read_npz

    where = f"{archive}:{unpacked.member.get(path, path.name)}"
    if not path.is_file():
        raise DataFormatError(f"missing {path.name} beside Y.trn.npz", path=archive)
    try:
        return read_npz(path, binary=binary)
    except DataFormatError as e:
        raise DataFormatError(e.message, path=where) from None


def _check_shapes(m: dict[str, sp.csr_matrix], where: dict[str, str], info: DatasetInfo,
                  check_facts: bool) -> list[str]:
    """Shapes agree across the four files and with the registry's facts; returns the facts checked."""
    d, n_labels = m["X.trn"].shape[1], m["Y.trn"].shape[1]
    if m["X.tst"].shape[1] != d:
        raise DataFormatError(f"{m['X.tst'].shape[1]} feature columns but X.trn.npz has {d}",
                              path=where["X.tst"])
    if m["Y.tst"].shape[1] != n_labels:
        raise DataFormatError(f"{m['Y.tst'].shape[1]} label columns but Y.trn.npz has {n_labels}",
                              path=where["Y.tst"])
    for split in ("trn", "tst"):
        if m[f"X.{split}"].shape[0] != m[f"Y.{split}"].shape[0]:
            raise DataFormatError(f"{m[f'Y.{split}'].shape[0]} rows but X.{split}.npz has "
                                  f"{m[f'X.{split}'].shape[0]}", path=where[f"Y.{split}"])
    checked: list[str] = []
    if not check_facts:
        return checked
    hint = (" (the registry in xmc/datasets.py may be wrong for this archive: rerun with "
            "--skip-registry-check to accept it)")
    for fact, got, file in (("n_labels", n_labels, "Y.trn"), ("n_train", m["Y.trn"].shape[0], "Y.trn"),
                            ("n_test", m["Y.tst"].shape[0], "Y.tst")):
        want = getattr(info, fact)
        if want is None:
            continue
        if got != want:
            noun = "labels" if fact == "n_labels" else "rows"
            raise DataFormatError(f"{got} {noun} but {info.name} has {want} as published ({fact}){hint}",
                                  path=where[file])
        checked.append(fact)
    if info.n_features is not None:
        if d == info.n_features:
            checked.append("n_features")
        else:  # the sources do not say which feature folder D was counted on: warn only
            _log(f"warning: {d} features, the published D of {info.name} is {info.n_features} "
                 "(another feature folder?)")
    return checked


# ---------------------------------------------------------------------------------------------
# write the bundle


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
    import pyarrow.compute as pc

    rows = pc.cast(pa.array(np.arange(a, b, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), rows, "")


def _write_split(folder: Path, prefix: str, X: sp.csr_matrix, Y: sp.csr_matrix, max_rows: int,
                 max_nnz: int) -> dict[str, int]:
    """Shards ``part-NNNNN.parquet`` in row order with the columns featurize writes."""
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


def _write_pifa(folder: Path, X: sp.csr_matrix, Y: sp.csr_matrix, max_rows: int, max_nnz: int) -> int:
    """Rows of normalize(Y^T X) (as ``xmc.tree.pifa``), computed in blocks of labels so memory stays
    bounded; labels with no training document have no row (as the Spark job). Returns the nnz."""
    folder.mkdir()
    Yc = Y.tocsc()
    row_nnz = np.diff(X.indptr).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(row_nnz[Yc.indices])])
    cost = np.concatenate([[0], np.cumsum(cum[Yc.indptr[1:]] - cum[Yc.indptr[:-1]])])  # upper bound of nnz
    nnz = 0
    for part, (a, b) in enumerate(_bounds(cost, max_rows, max_nnz)):
        Z = csr(Yc[:, a:b].T @ X)
        keep = np.flatnonzero(np.diff(Z.indptr))
        Z = normalize_rows(Z[keep])
        table = pa.table({
            "label_idx": pa.array((keep + a).astype(np.int32), pa.int32()),
            "feat_idx": _lists(Z.indptr, Z.indices.astype(np.int32, copy=False), 0, Z.shape[0], pa.int32()),
            "feat_val": _lists(Z.indptr, Z.data, 0, Z.shape[0], pa.float32()),
        })
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
        nnz += Z.nnz
    return nnz


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
    from xmc.spark.bundle import FORMAT, SCHEMA_VERSION

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
        _log(f"{info.name}: {m['X.trn'].shape[0]} train / {m['X.tst'].shape[0]} test documents, "
             f"{d} features, {n_labels} labels{against}")
        with atomic_dir(out) as tmp:
            t1 = time.perf_counter()
            splits = {"train": _write_split(tmp / "train", "trn-", m["X.trn"], m["Y.trn"], max_rows, max_nnz),
                      "test": _write_split(tmp / "test", "tst-", m["X.tst"], m["Y.tst"], max_rows, max_nnz)}
            if names is not None:
                (tmp / "labels.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
            freq = np.bincount(m["Y.trn"].indices, minlength=n_labels).astype(np.int64)
            np.savez(tmp / "label_stats.npz", freq=freq)
            seconds["write_shards"] = round(time.perf_counter() - t1, 3)
            pifa_nnz = None
            if pifa:
                t1 = time.perf_counter()
                pifa_nnz = _write_pifa(tmp / "pifa", m["X.trn"], m["Y.trn"], max_rows, max_nnz)
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
                "shard_columns": {"doc_id": "string", "feat_idx": "array<int32>",
                                  "feat_val": "array<float32>", "label_idx": "array<int32>"},
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


# ---------------------------------------------------------------------------------------------
# the whole fetch


def _current_bundle(out: Path, digest: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of ``out`` when it is a bundle already built from this archive with these params."""
    from xmc.spark.bundle import read_manifest

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
    from xmc.spark.bundle import FORMAT

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
        _log(f"{out} is already the bundle of this archive (--force rebuilds it)")
        return FetchResult(info.name, out, archive, digest, checksum, reused, True, current)
    manifest = build_bundle(archive, out, info, archive_sha256=digest, checksum=checksum, url=url,
                            features=features, pifa=pifa, check_facts=check_facts)
    _log(f"wrote {out}; train with `xmc train --data {out} --model MODEL_DIR`")
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

