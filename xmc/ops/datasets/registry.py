"""The standard XMC benchmarks we know: where PECOS publishes them, their published sizes, the cache."""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmc.errors import ParamError, XMCError

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


log = logging.getLogger("xmc.datasets")


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
    log.info(f"warning: {name!r} is not in the registry: no published shape to check it against")
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
