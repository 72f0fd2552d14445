"""Atomic outputs: a file or folder appears complete or not at all, never half written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it takes ``path``'s place (old one removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest_file(
    folder: str | Path, *, fmt: str, version: int, kind: str, noun: str, fix: str
) -> dict[str, Any]:
    """``folder/manifest.json`` checked for its format and schema version (of a model, a features
    bundle, ...). In messages ``kind`` names the thing with its article ("an xmc model"), ``noun``
    without it ("model"); ``fix`` says what to do about a missing or foreign one."""
    import json

    from xmc.errors import BundleError

    folder = Path(folder)
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such {noun} folder ({fix})")
    if not path.is_file():
        raise BundleError(f"{folder}: not {kind} (no manifest.json; {fix})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: corrupt manifest (line {e.lineno}: {e.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise BundleError(f"{path}: not {kind} manifest (format != {fmt!r})")
    if manifest.get("schema_version") != version:
        raise BundleError(f"{path}: schema_version {manifest.get('schema_version')!r} is not supported "
                          f"by this xmc (reads {version}); {fix}")
    return manifest


def verify_checksums(folder: str | Path, files: dict[str, str]) -> None:
    """Every file a manifest lists exists and has its recorded sha256 (else a clear BundleError)."""
    from xmc.errors import BundleError

    for name, digest in files.items():
        f = Path(folder) / name
        if not f.is_file():
            raise BundleError(f"{folder}: file {name} listed in the manifest is missing")
        if sha256(f) != digest:
            raise BundleError(f"{f}: checksum mismatch, the file is corrupt or was modified")
