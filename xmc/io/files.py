"""Atomic outputs: a file or folder appears complete or not at all, never half written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Temp siblings are named ``.NAME.<pid>-<random>.tmp`` (being written) and ``.NAME.<pid>-<random>.old``
# (the previous version, between two renames). A run killed with SIGKILL leaves them behind; the next
# write of the same target removes those whose process is gone (``clean_stale``).
_SIBLING = re.compile(r"\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.(?P<kind>tmp|old)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(path: str | Path) -> list[Path]:
    """Remove the temp siblings of ``path`` that a dead run left; returns what was removed.

    A ``.old`` sibling while ``path`` itself is missing is a run killed between its two renames:
    it is the previous complete version, so it is put back instead of removed.
    """
    path = Path(path)
    prefix = "." + path.name
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for sib in sorted(path.parent.iterdir()):
        if not sib.name.startswith(prefix):
            continue
        m = _SIBLING.fullmatch(sib.name[len(prefix):])
        if m is None or (m["pid"] is not None and _alive(int(m["pid"]))):
            continue
        if m["kind"] == "old" and not os.path.lexists(path):
            os.replace(sib, path)
            continue
        _remove(sib)
        removed.append(sib)
    return removed


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; returns them, deepest first."""
    made: list[Path] = []
    parent = path.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def _unmake(folders: list[Path]) -> None:
    """Remove the parent folders a failed write created (those still empty)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}"


def check_target(path: str | Path, *, folder: bool, owned: Callable[[Path], bool] | None = None,
                 what: str = "an output of xmc") -> None:
    """Refuse to replace what is not ours: a folder output never replaces a file (or a file output
    a folder), and an existing non-empty folder is replaced only when ``owned`` says it is ours."""
    from xmc.errors import ParamError

    path = Path(path)
    fix = "remove it or choose another path"
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ParamError(f"{path}: {parent} is not a folder, so nothing can be written there")
    if not os.path.lexists(path):
        return
    if folder:
        if path.is_symlink() or not path.is_dir():
            raise ParamError(f"{path} exists and is not a folder: refusing to replace it with {what} ({fix})")
        if owned is not None and any(path.iterdir()) and not owned(path):
            raise ParamError(f"{path} is a non-empty folder that is not {what}: refusing to replace it "
                             f"({fix})")
    elif path.is_dir() and not path.is_symlink():
        raise ParamError(f"{path} is a folder: refusing to replace it with a file ({fix})")


def manifest_format_is(fmt: str) -> Callable[[Path], bool]:
    """``owned`` predicate of ``check_target``: the folder's manifest.json says ``format: fmt``."""
    import json

    def owned(folder: Path) -> bool:
        try:
            return bool(json.loads((folder / "manifest.json").read_text()).get("format") == fmt)
        except (OSError, ValueError, AttributeError):
            return False

    return owned


def _begin(path: Path, *, folder: bool, owned: Callable[[Path], bool] | None = None,
           what: str = "an output of xmc") -> tuple[list[Path], Path]:
    """The common start of an atomic write: refuse a target that is not ours, create missing
    parents (returned, to undo on failure), clean dead runs' siblings, make the temp sibling."""
    check_target(path, folder=folder, owned=owned, what=what)
    made = _make_parents(path)
    clean_stale(path)
    tmp = _sibling(path, "tmp")
    if folder:
        tmp.mkdir()
    else:
        tmp.touch()
    return made, tmp


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed.

    A folder at ``path`` is refused; temp siblings of dead runs are cleaned first."""
    path = Path(path)
    made, tmp = _begin(path, folder=False)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _unmake(made)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, owned: Callable[[Path], bool] | None = None,
               what: str = "an output of xmc") -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it takes ``path``'s place (old one removed).

    An existing ``path`` is replaced only if it is a folder and, given ``owned``, empty or ours
    (``check_target``); temp siblings of dead runs are cleaned first."""
    path = Path(path)
    made, tmp = _begin(path, folder=True, owned=owned, what=what)
    try:
        yield tmp
        if path.exists():
            old = _sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _unmake(made)
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


def verify_checksums(folder: str | Path, files: object, *, required: tuple[str, ...] = (),
                     covered: Callable[[str], bool] | None = None) -> None:
    """The manifest's ``files`` map is the whole truth about the folder, else a ``BundleError``:

    * it is a non-empty map of relative names to sha256 digests, listing every ``required`` file;
    * every file on disk that ``covered`` selects (default: all but manifest.json) is listed
      (an unlisted file is refused: nothing we did not write and checksum is ever read);
    * every listed file exists and has its digest.
    """
    from xmc.errors import BundleError

    folder = Path(folder)
    where = folder / "manifest.json"
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}: 'files' lists no file: refusing a folder whose files are not "
                          "checksummed")
    for name, digest in files.items():
        parts = Path(name).parts if isinstance(name, str) else ()
        if (not parts or Path(name).is_absolute() or ".." in parts or not isinstance(digest, str)
                or not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise BundleError(f"{where}: bad 'files' entry {name!r}: {digest!r}")
    missing = [n for n in required if n not in files]
    if missing:
        raise BundleError(f"{where}: 'files' does not list {', '.join(missing)}: the list is partial")
    on_disk = sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*")
                     if (f.is_file() or f.is_symlink()) and f != folder / "manifest.json")
    unlisted = [n for n in on_disk if (covered is None or covered(n)) and n not in files]
    if unlisted:
        raise BundleError(f"{folder}: file {unlisted[0]} is not listed in manifest.json"
                          + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
                          + ": refusing a folder holding files it does not vouch for")
    for name, digest in files.items():
        f = folder / name
        if f.is_symlink() or not f.is_file():
            raise BundleError(f"{folder}: file {name} listed in the manifest is missing")
        if sha256(f) != digest:
            raise BundleError(f"{f}: checksum mismatch, the file is corrupt or was modified")
