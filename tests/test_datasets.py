"""`xmc datasets`: a tiny archive in the PECOS xmc-base layout, served from a local mirror, fetched,
verified and unpacked into a features bundle that the loader and the trainer read.

Offline by design: the mirror is a folder (file:// URL), the "unreachable" host a closed local port.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import topic_data
from xmc.cli import main
from xmc.core.tree import pifa
from xmc.errors import DataFormatError, ParamError
from xmc.io.features import label_frequencies, load_label_names, load_pifa, load_split, read_manifest
from xmc.io.files import sha256
from xmc.ops.datasets import fetch as datasets
from xmc.ops.datasets.fetch import DatasetInfo, FetchError, build_bundle, fetch

N_TRN, N_TST, D, L = 60, 25, 40, 12
NAMES = [f"label {i} é" for i in range(L)]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(datasets.MIRROR_ENV, raising=False)
    monkeypatch.delenv(datasets.CACHE_ENV, raising=False)


def _data(seed: int = 0) -> dict[str, sp.csr_matrix]:
    rng = np.random.default_rng(seed)

    def x(n: int) -> sp.csr_matrix:
        X = sp.random(n, D, density=0.15, format="csr", dtype=np.float32, random_state=rng)
        X.data += 0.01  # strictly positive, as TF-IDF
        X = sp.csr_matrix(X.multiply(1 / np.maximum(sp.linalg.norm(X, axis=1), 1e-9)[:, None]))
        X.data[X.indptr[3]:X.indptr[4]] = 0  # an empty row survives as an empty list
        X.eliminate_zeros()
        return sp.csr_matrix(X, dtype=np.float32)

    def y(n: int) -> sp.csr_matrix:
        Y = sp.random(n, L, density=0.2, format="csr", random_state=rng)
        Y.data[:] = 1
        return sp.csr_matrix(Y, dtype=np.float32)

    return {"X.trn": x(N_TRN), "X.tst": x(N_TST), "Y.trn": y(N_TRN), "Y.tst": y(N_TST)}


def _npz(M: sp.csr_matrix) -> bytes:
    buf = io.BytesIO()
    sp.save_npz(buf, M)
    return buf.getvalue()


def _archive(path: Path, data: dict[str, sp.csr_matrix], *, root: str = "xmc-base/tiny",
             features: str = "tfidf-attnxml", names: list[str] | None = NAMES,
             extra: list[tarfile.TarInfo] | None = None) -> Path:
    """A .tar.gz in the PECOS layout: <root>/{Y.*.npz, X.*.txt, output-items.txt} and
    <root>/<features>/X.*.npz, plus ``extra`` members."""
    files = {f"{root}/Y.trn.npz": _npz(data["Y.trn"]), f"{root}/Y.tst.npz": _npz(data["Y.tst"]),
             f"{root}/X.trn.txt": b"raw text is skipped\n" * N_TRN,
             f"{root}/{features}/X.trn.npz": _npz(data["X.trn"]),
             f"{root}/{features}/X.tst.npz": _npz(data["X.tst"])}
    if names is not None:
        files[f"{root}/output-items.txt"] = "".join(n + "\n" for n in names).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for d in sorted({n.rsplit("/", 1)[0] for n in files}):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, sp.csr_matrix]:
    data = _data()
    _archive(tmp_path / "mirror" / "tiny.tar.gz", data)
    return data


def _fetch(tmp_path: Path, out: str = "bundle", **kw: Any) -> datasets.FetchResult:
    kw.setdefault("mirror", str(tmp_path / "mirror"))
    return fetch("tiny", tmp_path / out, cache=tmp_path / "cache", **kw)


def _assert_equal(bundle: Path, data: dict[str, sp.csr_matrix]) -> None:
    for split, key in (("train", "trn"), ("test", "tst")):
        s = load_split(bundle, split)
        assert s.X.shape == data[f"X.{key}"].shape and s.Y.shape == data[f"Y.{key}"].shape
        assert abs(s.X - data[f"X.{key}"]).max() <= 1e-6
        assert (s.Y != data[f"Y.{key}"]).nnz == 0
        assert s.doc_ids[:2] == [f"{key}-0", f"{key}-1"] and len(s.doc_ids) == data[f"X.{key}"].shape[0]


def _leftovers(tmp_path: Path) -> list[str]:
    """Temp files or folders a failed fetch might leave (downloads, unpack staging, bundle temp)."""
    return sorted(p.name for p in tmp_path.rglob(".*")
                  if p.name.endswith((".part", ".tmp")) or ".unpack." in p.name)


def test_cli_fetch_writes_a_bundle_equal_to_the_archive_and_reuses_the_cache(
    tmp_path: Path, tiny: dict[str, sp.csr_matrix], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["datasets", "fetch", "tiny", "--mirror", str(tmp_path / "mirror"), "--cache-dir",
            str(tmp_path / "cache"), "--out", str(tmp_path / "bundle")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    first = json.loads(out)
    assert first["n_labels"] == L and first["splits"] == {"train": N_TRN, "test": N_TST}
    assert not first["reused_archive"] and "not pinned" in first["checksum"] and "not pinned" in err
    assert "not in the registry" in err
    bundle = tmp_path / "bundle"
    _assert_equal(bundle, tiny)
    assert load_label_names(bundle) == NAMES
    assert np.array_equal(label_frequencies(bundle), np.asarray(tiny["Y.trn"].sum(axis=0)).ravel())
    assert abs(load_pifa(bundle) - pifa(tiny["X.trn"], tiny["Y.trn"])).max() < 1e-6
    manifest = read_manifest(bundle)
    assert manifest["splits"]["train"]["empty_rows"] == 1 and load_split(bundle).X[3].nnz == 0
    recorded = json.loads((tmp_path / "cache" / "checksums.json").read_text())["archives"]["tiny.tar.gz"]
    assert recorded["sha256"] == manifest["input"]["archive_sha256"] == first["sha256"]
    assert manifest["input"]["members"]["X.trn"] == "xmc-base/tiny/tfidf-attnxml/X.trn.npz"
    assert not (tmp_path / "cache" / ".tiny.unpack").exists() and _leftovers(tmp_path) == []

    assert main(argv) == 0  # the cached archive verifies against the record; the bundle is current
    second = json.loads(capsys.readouterr().out)
    assert second["reused_archive"] and second["reused_bundle"] and "recorded" in second["checksum"]
    assert main([*argv, "--force"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["reused_archive"] and not third["reused_bundle"]
    _assert_equal(bundle, tiny)

    assert main(["datasets", "list", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["eurlex-4k"]["labels"] == 3956 and rows["eurlex-4k"]["cached_bytes"] is None


def test_many_shards_and_pifa_blocks_load_the_same(tmp_path: Path, tiny: dict[str, sp.csr_matrix]) -> None:
    archive = _archive(tmp_path / "a" / "tiny.tar.gz", tiny)
    build_bundle(archive, tmp_path / "b", DatasetInfo("tiny"), archive_sha256="-", checksum="-", url="-",
                 max_rows=7, max_nnz=30)
    assert len(list((tmp_path / "b" / "train").glob("part-*.parquet"))) >= N_TRN // 7
    assert len(list((tmp_path / "b" / "pifa").glob("part-*.parquet"))) > 1
    _assert_equal(tmp_path / "b", tiny)
    assert abs(load_pifa(tmp_path / "b") - pifa(tiny["X.trn"], tiny["Y.trn"])).max() < 1e-6


def test_tolerant_layout_and_feature_folder_choice(tmp_path: Path, tiny: dict[str, sp.csr_matrix]) -> None:
    _archive(tmp_path / "mirror" / "tiny.tar.gz", tiny, root="tiny", features="tfidf", names=None)
    with pytest.raises(DataFormatError, match=r"no feature folder 'tfidf-attnxml'.*the archive has: tfidf"):
        _fetch(tmp_path)
    assert not (tmp_path / "bundle").exists()
    result = _fetch(tmp_path, features="tfidf", pifa=False)
    _assert_equal(tmp_path / "bundle", tiny)
    assert load_label_names(tmp_path / "bundle") is None and result.manifest["pifa"] is None


def test_a_changed_archive_fails_with_expected_and_got_and_leaves_nothing(
    tmp_path: Path, tiny: dict[str, sp.csr_matrix]
) -> None:
    good = _fetch(tmp_path).sha256
    mirror = tmp_path / "mirror" / "tiny.tar.gz"
    blob = bytearray(mirror.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    mirror.write_bytes(bytes(blob))
    (tmp_path / "cache" / "tiny.tar.gz").unlink()  # force a new download of the changed archive
    with pytest.raises(FetchError) as e:
        _fetch(tmp_path, out="other")
    msg = str(e.value)
    assert f"expected {good}" in msg and "got " in msg and "tiny.tar.gz" in msg and "removed" in msg
    assert not (tmp_path / "other").exists() and not (tmp_path / "cache" / "tiny.tar.gz").exists()
    assert _leftovers(tmp_path) == []


def test_a_corrupt_cached_archive_is_downloaded_again(tmp_path: Path, tiny: dict[str, sp.csr_matrix]) -> None:
    good = _fetch(tmp_path).sha256
    cached = tmp_path / "cache" / "tiny.tar.gz"
    cached.write_bytes(cached.read_bytes()[:-10])
    again = _fetch(tmp_path, force=True)
    assert not again.reused_archive and again.sha256 == good
    _assert_equal(tmp_path / "bundle", tiny)


def test_a_wrong_pinned_sha256_fails_and_a_right_one_verifies(
    tmp_path: Path, tiny: dict[str, sp.csr_matrix], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FetchError, match=f"expected {'0' * 64} \\(--sha256\\), got [0-9a-f]{{64}}"):
        _fetch(tmp_path, sha256_pin="0" * 64)
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "cache" / "tiny.tar.gz").exists()
    assert not (tmp_path / "cache" / "checksums.json").exists()
    digest = sha256(tmp_path / "mirror" / "tiny.tar.gz")
    result = _fetch(tmp_path, sha256_pin=digest.upper())
    assert result.checksum == "verified: sha256 --sha256"
    assert main(["datasets", "fetch", "tiny", "--mirror", str(tmp_path / "mirror"), "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(tmp_path / "b2"), "--sha256", "abc"]) == 2
    assert "is not a sha256" in capsys.readouterr().err


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, target, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("member", [
    _member("../evil"), _member("xmc-base/tiny/../../evil"), _member("/tmp/evil-absolute"),
    _member("xmc-base/tiny/link", tarfile.SYMTYPE, "/etc/passwd"),
    _member("xmc-base/tiny/hard", tarfile.LNKTYPE, "xmc-base/tiny/Y.trn.npz"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_members_are_refused(tmp_path: Path, tiny: dict[str, sp.csr_matrix],
                                    member: tarfile.TarInfo) -> None:
    _archive(tmp_path / "mirror" / "tiny.tar.gz", tiny, extra=[member])
    with pytest.raises(DataFormatError, match="unsafe archive member"):
        _fetch(tmp_path)
    assert not (tmp_path / "bundle").exists() and _leftovers(tmp_path) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "cache").joinpath("..", "evil").exists()
    assert not Path("/tmp/evil-absolute").exists()


def test_an_unreachable_url_says_offline_and_how_to_use_a_mirror(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=r"could not reach http://127\.0\.0\.1:\d+/tiny\.tar\.gz .*offline.*"
                                         r"--mirror FOLDER.*XMC_DATASETS_MIRROR"):
        _fetch(tmp_path, mirror=f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(FetchError, match="the mirror folder must hold tiny.tar.gz"):
        _fetch(tmp_path, mirror=str(tmp_path / "empty"))
    assert _leftovers(tmp_path) == [] and not (tmp_path / "bundle").exists()


def test_counts_are_checked_against_the_registry(tmp_path: Path, tiny: dict[str, sp.csr_matrix]) -> None:
    with pytest.raises(DataFormatError, match=r"Y\.trn\.npz: 12 labels but tiny has 999 as published"):
        _fetch(tmp_path, info=DatasetInfo("tiny", n_labels=999))
    with pytest.raises(DataFormatError, match=r"Y\.tst\.npz: 25 rows but tiny has 26 as published \(n_test"):
        _fetch(tmp_path, info=DatasetInfo("tiny", n_labels=L, n_train=N_TRN, n_test=N_TST + 1))
    assert not (tmp_path / "bundle").exists()
    ok = _fetch(tmp_path, info=DatasetInfo("tiny", n_labels=999), check_facts=False)
    assert ok.manifest["registry"]["checked"] == []
    ok = _fetch(tmp_path, info=DatasetInfo("tiny", n_labels=L, n_train=N_TRN, n_test=N_TST), force=True)
    assert ok.manifest["registry"]["checked"] == ["n_labels", "n_train", "n_test"]


def test_inconsistent_files_name_the_member(tmp_path: Path, tiny: dict[str, sp.csr_matrix]) -> None:
    bad = dict(tiny, **{"X.tst": sp.csr_matrix((N_TST, D + 1), dtype=np.float32)})
    _archive(tmp_path / "mirror" / "tiny.tar.gz", bad)
    with pytest.raises(DataFormatError, match=r"tfidf-attnxml/X\.tst\.npz: 41 feature columns but X\.trn"):
        _fetch(tmp_path)
    _archive(tmp_path / "mirror" / "tiny.tar.gz", tiny, names=NAMES[:-1])
    with pytest.raises(DataFormatError, match=r"output-items\.txt: 11 label names for 12 label columns"):
        _fetch(tmp_path, sha256_pin=sha256(tmp_path / "mirror" / "tiny.tar.gz"))
    nan = dict(tiny, **{"X.trn": tiny["X.trn"].copy()})
    nan["X.trn"].data[0] = np.nan
    _archive(tmp_path / "mirror" / "tiny.tar.gz", nan)
    with pytest.raises(DataFormatError, match=r"tfidf-attnxml/X\.trn\.npz: NaN or inf"):
        _fetch(tmp_path, sha256_pin=sha256(tmp_path / "mirror" / "tiny.tar.gz"))
    (tmp_path / "mirror" / "tiny.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataFormatError, match="not a readable tar archive"):
        _fetch(tmp_path, sha256_pin=sha256(tmp_path / "mirror" / "tiny.tar.gz"))
    assert not (tmp_path / "bundle").exists() and _leftovers(tmp_path) == []


def test_names_and_out_folder_are_checked(tmp_path: Path, tiny: dict[str, sp.csr_matrix]) -> None:
    with pytest.raises(ParamError, match="unknown dataset 'tiny'; known: eurlex-4k, wiki10-31k"):
        fetch("tiny", tmp_path / "b", cache=tmp_path / "cache")
    with pytest.raises(ParamError, match="invalid"):
        fetch("../x", tmp_path / "b", cache=tmp_path / "cache", mirror=str(tmp_path / "mirror"))
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ParamError, match="not a features bundle; refusing"):
        _fetch(tmp_path, out="precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    (tmp_path / "precious" / "manifest.json").write_text('{"format": "xmc-model"}')  # a model folder
    with pytest.raises(ParamError, match="not a features bundle; refusing"):
        _fetch(tmp_path, out="precious")
    assert datasets.source_url(datasets.REGISTRY["eurlex-4k"]) == (
        "https://archive.org/download/pecos-dataset/xmc-base/eurlex-4k.tar.gz")


def test_the_model_trains_on_a_fetched_bundle(tmp_path: Path) -> None:
    from xmc.core.fit import fit
    from xmc.params import XMCParams

    X, Y = topic_data(n=300, n_labels=16, d=50)
    data = {"X.trn": X[:240], "Y.trn": Y[:240], "X.tst": X[240:], "Y.tst": Y[240:]}
    _archive(tmp_path / "mirror" / "tiny.tar.gz", data, names=[f"t{i}" for i in range(16)])
    _fetch(tmp_path)
    train, test = load_split(tmp_path / "bundle", "train"), load_split(tmp_path / "bundle", "test")
    model = fit(train.X, train.Y, XMCParams().replace(max_leaf_size=4, rounds=0),
                         label_names=load_label_names(tmp_path / "bundle"))
    scores = model.predict(test.X, topk=1)
    hits = scores.multiply(test.Y).getnnz(axis=1) > 0
    assert hits.mean() > 0.8
