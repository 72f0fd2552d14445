"""Property-based fuzzing of every reader and of CLI flag values (issue 21).

The contract, for any input: either success with the same output as a clean run, or an
``XMCError`` whose message names the file (and line/field/flag where there is one), exit code 2
through the CLI; never another exception, never a traceback, never a partial or stray file.
Readers are fuzzed in process (fast); a few cases go through a subprocess.

Budget: the "ci" profile (tests/conftest.py) is derandomised with a fixed example count;
``XMC_FUZZ_PROFILE=long`` explores more (``XMC_FUZZ_EXAMPLES`` sets the count).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import topic_data
from xmc.errors import XMCError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is shared by all examples of a test)."""
    with tempfile.TemporaryDirectory(prefix="xmc-fuzz-") as d:
        yield Path(d)


def contract(fn: Any, path: Path) -> Any:
    """``fn()``'s result, or None when it raised an XMCError naming ``path``; anything else fails."""
    try:
        return fn()
    except XMCError as e:
        assert path.name in str(e), f"message does not name the file: {e}"
        return None


# ---- XC text lines ----

_TOKENS = ["0", "1", "2", "7", "-1", "99", "1.5", "nan", "inf", "x", "", ":", ",", "0:1", "1:0.5", "3:2e3",
           "2:-1", "0:nan", "1:", ":1", "5:1", "1,2", "0,0", "é", "\t", "١"]
_line = st.lists(st.sampled_from(_TOKENS), max_size=6).map(" ".join)


@st.composite
def xc_files(draw: Any) -> bytes:
    n = draw(st.integers(0, 5))
    header = draw(st.one_of(st.just(f"{n} 6 4"),
                            st.sampled_from(["", "3 6", "a b c", "-1 6 4", f"{n} 6 4 1"])))
    lines = draw(st.lists(_line, min_size=0, max_size=6))
    raw = ("\n".join([header, *lines]) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode()
    if draw(st.booleans()):
        raw = raw.replace(b"\xc3\xa9", b"\xe9")  # invalid UTF-8
    if draw(st.booleans()):
        raw = gzip.compress(raw)
        raw = raw[: draw(st.integers(0, len(raw)))]  # maybe truncated
    return raw


@given(xc_files())
def test_fuzz_xc_reader(raw: bytes) -> None:
    from xmc.io.xc import read_xc, write_xc

    with scratch() as tmp:
        path = tmp / "data.txt"
        path.write_bytes(raw)
        got = contract(lambda: read_xc(path), path)
        if got is not None:  # success: finite, in range, and the same after a write/read round trip
            X, Y = got
            assert np.all(np.isfinite(X.data)) and X.shape[0] == Y.shape[0]
            write_xc(tmp / "again.txt", X, Y)
            X2, Y2 = read_xc(tmp / "again.txt")
            assert (X != X2).nnz == 0 and (Y != Y2).nnz == 0


# ---- JSONL records ----

_json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                         st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3))
_record = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(max_size=3), st.integers(0, 5), _json_values),
    "text": st.one_of(st.text(max_size=8), _json_values),
    "labels": st.one_of(st.lists(st.text(max_size=3), max_size=3), _json_values)})
_jsonl_line = st.one_of(_record.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
                        _json_values.map(lambda v: json.dumps(v).encode()),
                        st.sampled_from([b"", b" ", b"{", b'{"id": 1, "text": "a\xff", "labels": ["x"]}',
                                         b"[[[[", b'{"id": "a", "text": "t", "labels": ["x"]}']))


@given(st.lists(_jsonl_line, min_size=0, max_size=6), st.booleans(), st.booleans())
def test_fuzz_jsonl_records(lines: list[bytes], gz: bool, truncate: bool) -> None:
    from xmc.errors import DataFormatError
    from xmc.io.records import read_records

    raw = b"".join(line + b"\n" for line in lines)
    if gz:
        raw = gzip.compress(raw)
        raw = raw[: len(raw) - 5] if truncate else raw
    with scratch() as tmp:
        path = tmp / ("r.jsonl.gz" if gz else "r.jsonl")
        path.write_bytes(raw)
        try:
            records = read_records(path)
        except DataFormatError as e:
            assert path.name in str(e) and (e.line is not None or "empty file" in str(e) or "gzip" in str(e))
            return
        except XMCError as e:
            raise AssertionError(f"not a located DataFormatError: {e!r}") from None
        assert records and len({r.id for r in records}) == len(records)
        assert all(r.text.strip() and r.labels for r in records)


# ---- npz matrices ----


@st.composite
def npz_bytes(draw: Any) -> bytes:
    n, d = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    M = sp.random(n, d, density=0.5, format="csr", random_state=draw(st.integers(0, 9)), dtype=np.float32)
    arrays = {"format": np.array(b"csr"), "shape": np.array([n, d]), "data": M.data, "indices": M.indices,
              "indptr": M.indptr}
    edit = draw(st.sampled_from(["none", "nan", "index", "indptr", "shape", "drop", "format", "dtype",
                                 "object", "truncate", "flip", "garbage"]))
    if edit == "nan" and len(M.data):
        arrays["data"] = M.data.copy()
        arrays["data"][0] = np.nan
    elif edit == "index" and len(M.indices):
        arrays["indices"] = M.indices.copy()
        arrays["indices"][0] = d + 3
    elif edit == "indptr":
        arrays["indptr"] = M.indptr[::-1].copy()
    elif edit == "shape":
        arrays["shape"] = np.array(draw(st.sampled_from([[-1, d], [n], [n, d, 1], [2**40, 2**40]])))
    elif edit == "drop":
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    elif edit == "format":
        arrays["format"] = np.array(draw(st.sampled_from([b"dia", b"", b"lil"])))
    elif edit == "dtype":
        arrays["data"] = M.data.astype("U3")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    if edit == "object":
        buf = io.BytesIO()
        np.savez(buf, format=np.array(["csr", 1], dtype=object), shape=np.array([n, d]))
        raw = buf.getvalue()
    elif edit == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif edit == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:]
    elif edit == "garbage":
        raw = draw(st.binary(max_size=40))
    return raw


@given(npz_bytes(), st.booleans())
def test_fuzz_npz_reader(raw: bytes, binary: bool) -> None:
    from xmc.io.npz import read_npz

    with scratch() as tmp:
        path = tmp / "M.npz"
        path.write_bytes(raw)
        M = contract(lambda: read_npz(path, binary=binary), path)
        if M is not None:
            M.check_format(full_check=True)
            assert np.all(np.isfinite(M.data)) and "np.int64" not in repr(M.shape)


# ---- model manifests ----


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xmc.core.fit import fit
    from xmc.params import XMCParams

    X, Y = topic_data(n=80, n_labels=8, d=30)
    folder = tmp_path_factory.mktemp("fuzz-model") / "m"
    fit(X, Y, XMCParams().replace(max_leaf_size=3, rounds=0)).save(folder)
    sp.save_npz(folder.parent / "X.npz", X)
    return folder


_MANIFEST_EDITS = st.sampled_from([
    ("files", {}), ("files", None), ("files", []), ("files", {"../x": "0" * 64}), ("n_features", -1),
    ("n_features", "30"), ("n_labels", 10**9), ("layers", []), ("layers", [{}]), ("layers", None),
    ("params", {"tree": {"max_leaf_size": 0}}), ("params", "x"), ("info", []), ("schema_version", 2),
    ("format", "xmc-features"), ("n_train", None),
])


@given(st.one_of(_MANIFEST_EDITS.map(lambda kv: ("manifest", kv)),
                 st.tuples(st.just("file"),
                           st.sampled_from(["tree.npz", "layer_0.npz", "layer_1.npz", "labels.npz"]),
                           st.sampled_from(["truncate", "flip", "empty", "nan", "drop_listing", "unlisted"])),
                 st.just(("raw", "not json{")), st.just(("none", None))))
def test_fuzz_model_bundle(model_dir: Path, edit: Any) -> None:
    """Edits with or without an updated checksum: the load refuses them, or the model predicts as before."""
    from xmc.core.model import XMCModel

    with scratch() as tmp:
        m = tmp / "m"
        shutil.copytree(model_dir, m)
        manifest = json.loads((m / "manifest.json").read_text())
        kind = edit[0]
        if kind == "manifest":
            key, value = edit[1]
            manifest[key] = value
        elif kind == "file":
            _, name, how = edit
            f = m / name
            if how == "truncate":
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
            elif how == "flip":
                raw = bytearray(f.read_bytes())
                raw[len(raw) // 2] ^= 0xFF
                f.write_bytes(bytes(raw))
            elif how == "empty":
                f.write_bytes(b"")
            elif how == "nan":
                with np.load(f) as z:
                    arrays = dict(z)
                first = sorted(arrays)[0]
                if np.issubdtype(arrays[first].dtype, np.floating) and arrays[first].size:
                    arrays[first] = arrays[first].copy()
                    arrays[first].flat[0] = np.nan
                np.savez(f, **arrays)
            elif how == "drop_listing":
                manifest["files"].pop(name)
            elif how == "unlisted":
                (m / (name + ".bak")).write_bytes(b"x")
            if name in manifest["files"]:  # the attacker updates the checksum too
                manifest["files"][name] = hashlib.sha256(f.read_bytes()).hexdigest()
        if kind == "raw":
            (m / "manifest.json").write_text(edit[1])
        else:
            (m / "manifest.json").write_text(json.dumps(manifest))
        model = contract(lambda: XMCModel.load(m), m)
        if model is not None:
            X = sp.load_npz(model_dir.parent / "X.npz")
            ref = XMCModel.load(model_dir).predict(X)
            got = model.predict(X)
            assert (abs(got - ref) > 1e-6).nnz == 0


# ---- CLI flag values, in process ----

_flag_values = st.one_of(st.integers(-5, 12).map(str), st.sampled_from(["", "x", "1.5", "nan", "-0", "1e3",
                                                                       "99999999999999999999", "0x10", " 3"]))


def _cli(argv: list[str]) -> tuple[int, str]:
    from xmc.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: exit 2 with the flag named
            rc = int(e.code or 0)
    return rc, err.getvalue()


@given(st.sampled_from(["--topk", "--beam-size", "--batch-rows"]), _flag_values,
       st.sampled_from(["p.npz", "p.jsonl", "p.csv", "p", "p.parquet", "p.npz.tmp"]))
def test_fuzz_predict_flags(model_dir: Path, flag: str, value: str, out: str) -> None:
    with scratch() as tmp:
        rc, err = _cli(["predict", "--model", str(model_dir), "--x", str(model_dir.parent / "X.npz"),
                        "--out", str(tmp / out), flag, value])
        assert "Traceback" not in err and "internal error" not in err, err
        assert rc in (0, 2), err
        if rc == 2:
            assert flag in err or "--out" in err, err
            assert list(tmp.iterdir()) == []  # nothing written, no stray temp sibling
        else:
            assert [p.name for p in tmp.iterdir()] == [out]


@given(st.sampled_from(["--max-leaf-size", "--rounds", "--max-copies", "--beam-size", "--topk",
                        "--validation-fraction", "--num-workers"]), _flag_values)
def test_fuzz_train_flags(model_dir: Path, flag: str, value: str) -> None:
    with scratch() as tmp:
        X = model_dir.parent / "X.npz"
        Y = tmp / "Y.npz"
        sp.save_npz(Y, topic_data(n=80, n_labels=8, d=30)[1])
        rc, err = _cli(["train", "--x", str(X), "--y", str(Y), "--model", str(tmp / "m"),
                        "--max-leaf-size", "3", "--rounds", "0", flag, value])
        assert "Traceback" not in err and "internal error" not in err, err
        assert rc in (0, 2), err
        assert (tmp / "m").is_dir() == (rc == 0)
        assert sorted(p.name for p in tmp.iterdir()) == (["Y.npz", "m"] if rc == 0 else ["Y.npz"])


# ---- a few through a real subprocess: the user's screen ----


@pytest.mark.parametrize("case", ["truncated_x", "not_npz", "bad_topk"])
def test_subprocess_bad_inputs_never_show_a_traceback(model_dir: Path, tmp_path: Path, case: str) -> None:
    X = model_dir.parent / "X.npz"
    if case == "truncated_x":
        (tmp_path / "in.npz").write_bytes(X.read_bytes()[:100])
    elif case == "not_npz":
        (tmp_path / "in.npz").write_text("1 2 3\n")
    else:
        shutil.copy(X, tmp_path / "in.npz")
    extra = ["--topk", "-3"] if case == "bad_topk" else []
    r = subprocess.run([sys.executable, "-m", "xmc.cli", "predict", "--model", str(model_dir),
                        "--x", "in.npz", "--out", "p.npz", *extra],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("in.npz" in r.stderr) or ("--topk" in r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]
