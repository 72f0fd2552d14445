from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import BIBTEX
from xmc.errors import DataFormatError
from xmc.io.readers import load_xy, read_xc, write_xc


def test_bibtex_text_matches_npz_and_provenance() -> None:
    X, Y = read_xc(BIBTEX / "bibtex_train.txt.gz")
    assert X.shape == (4880, 1836) and Y.shape == (4880, 159)
    assert X.nnz == 334668 and Y.nnz == 11681  # PROVENANCE.md cross-check figures
    Xn, Yn = load_xy(BIBTEX / "X.trn.npz", BIBTEX / "Y.trn.npz")
    assert abs(X - Xn).sum() == 0 and abs(Y - Yn).sum() == 0


@pytest.mark.parametrize("name", ["d.txt", "d.txt.gz"])
def test_roundtrip(tmp_path: Path, name: str) -> None:
    X = sp.csr_matrix(np.array([[0, 0.5, 0], [1.25, 0, 3], [0, 0, 0]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 0]], np.float32))
    write_xc(tmp_path / name, X, Y)
    X2, Y2 = read_xc(tmp_path / name)
    assert (X2 != X).nnz == 0 and (Y2 != Y).nnz == 0
    assert list(tmp_path.iterdir()) == [tmp_path / name]  # no temp files left behind


def test_point_without_labels_starts_with_space(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("2 3 2\n 0:1 2:2\n1 1:1\n")
    X, Y = read_xc(tmp_path / "a.txt")
    assert Y[0].nnz == 0 and Y[1, 1] == 1 and X[0, 2] == 2


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "plain.txt", "wt") as f:
        f.write("1 2 1\n0 1:1\n")
    assert read_xc(tmp_path / "plain.txt")[0].shape == (1, 2)


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ("", 1, "empty file"),
        ("2 3\n", 1, "'N D L'"),
        ("1 3 x\n0 0:1\n", 1, "not an integer"),
        ("1 3 2\n5 0:1\n", 2, "label 5 out of range"),
        ("1 3 2\n0 7:1\n", 2, "feature 7 out of range"),
        ("1 3 2\n0 1:nan\n", 2, "nan"),
        ("1 3 2\n0 1:abc\n", 2, "not a number"),
        ("1 3 2\n0 1\n", 2, "not 'index:value'"),
        ("1 3 2\n0 1:1 1:2\n", 2, "repeated"),
        ("1 3 2\n0,0 1:1\n", 2, "repeated"),
        ("2 3 2\n0 1:1\n", 3, "header says N=2 points but the file has 1"),
        ("1 3 2\n0 1:1\n1 1:1\n", 3, "more points than"),
        ("2 3 2\n0 1:1\n\n", 3, "empty line"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(DataFormatError) as err:
        read_xc(path)
    assert err.value.line == line
    assert f"bad.txt:{line}" in str(err.value)
    assert needle in str(err.value)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    X = sp.csr_matrix(np.ones((2, 2), np.float32))
    with pytest.raises(DataFormatError):
        write_xc(tmp_path / "out.txt", X, sp.csr_matrix((3, 2)))
    assert list(tmp_path.iterdir()) == []


def test_load_xy_rejects_text_plus_y(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="holds both X and Y"):
        load_xy(BIBTEX / "bibtex_test.txt.gz", BIBTEX / "Y.tst.npz")


def test_rows_without_features_are_written_without_a_trailing_space(tmp_path: Path) -> None:
    X = sp.csr_matrix(np.array([[0, 0, 0], [0.5, 0, 0.25], [0, 0, 0]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [0, 1], [0, 0]], np.float32))
    path = tmp_path / "edge.txt"
    write_xc(path, X, Y)
    lines = path.read_text().split("\n")
    assert lines[1] == "0" and lines[2] == "1 0:0.5 2:0.25" and lines[3] == " "
    X2, Y2 = read_xc(path)
    assert (X2 != X).nnz == 0 and (Y2 != Y).nnz == 0
