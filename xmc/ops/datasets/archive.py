"""Getting a benchmark archive: download (or a mirror), verify its sha256, unpack it safely, read and
check its matrices against the registry."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from xmc.errors import DataFormatError, ParamError
from xmc.io.files import atomic_file, sha256
from xmc.log import progress_bar
from xmc.ops.datasets.registry import (
    _HEX64,
    CHECKSUMS,
    FEATURE_FILES,
    LABEL_FILES,
    MIRROR_ENV,
    DatasetInfo,
    FetchError,
)

log = logging.getLogger("xmc.datasets")

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
            log.info(f"using the cached {path}")
        else:
            log.info(f"the cached {path} does not match the expected sha256 ({source}): fetching it again")
            path.unlink()
    if not reused:
        log.info(f"downloading {url}")
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
    log.info(f"{info.archive_name}: {status}")
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
    from xmc.io.npz import read_npz

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
            log.info(f"warning: {d} features, the published D of {info.name} is {info.n_features} "
                 "(another feature folder?)")
    return checked
