"""Shared fixtures: the Bibtex data the repository carries, and tiny hand-made problems."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

os.environ.setdefault("XMC_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
BIBTEX = REPO / "data" / "bibtex"


def free_ports(n: int) -> list[int]:
    """n distinct free ports on loopback (held together while picked, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    """One local Spark (2 cores, two shuffle partitions) for every test that featurizes in-process."""
    from xmc.engines.spark.session import spark_session

    session, created = spark_session("local[2]", {
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
        "spark.driver.memory": "1g"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    if created:
        session.stop()


@pytest.fixture(scope="session")
def bibtex() -> dict[str, sp.csr_matrix]:
    return {name: sp.load_npz(BIBTEX / f"{name}.npz").tocsr()
            for name in ("X.trn", "Y.trn", "X.tst", "Y.tst")}


@pytest.fixture(scope="session")
def bibtex_model(bibtex):  # type: ignore[no-untyped-def]
    from xmc.core.fit import fit

    return fit(bibtex["X.trn"], bibtex["Y.trn"])


def topic_data(
    n: int = 400, n_labels: int = 24, d: int = 60, seed: int = 0
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Separable toy data: label l owns features [l*2, l*2+2) plus noise features."""
    rng = np.random.default_rng(seed)
    rows, cols, ys = [], [], []
    for i in range(n):
        labels = rng.choice(n_labels, size=rng.integers(1, 3), replace=False)
        feats = set(rng.choice(np.arange(2 * n_labels, d), size=3, replace=False).tolist())
        for label in labels:
            feats.update([2 * int(label), 2 * int(label) + 1])
            ys.append((i, int(label)))
        rows += [i] * len(feats)
        cols += sorted(feats)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, d))
    yr, yc = zip(*ys, strict=True)
    Y = sp.csr_matrix((np.ones(len(ys), np.float32), (yr, yc)), shape=(n, n_labels))
    return X, Y


@pytest.fixture
def toy() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    return topic_data()


# Hypothesis profiles of the fuzz suite (tests/test_fuzz.py): "ci" (default) is derandomised with a
# fixed example count, so every run tries the same inputs within the CI budget; "long" explores,
# e.g. XMC_FUZZ_PROFILE=long XMC_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=int(os.environ.get("XMC_FUZZ_EXAMPLES", "40")), derandomize=True, deadline=None,
        print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile(
        "long", max_examples=int(os.environ.get("XMC_FUZZ_EXAMPLES", "1000")), derandomize=False,
        deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("XMC_FUZZ_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev extra; without it only the fuzz suite is skipped
    pass


def same_model(a: Any, b: Any, X: sp.csr_matrix | None = None) -> None:
    """Two fits of one model: every tree's structure equal, weights (and predictions on X) to 1e-6."""
    assert len(a.trees) == len(b.trees)
    for ta, tb in zip(a.trees, b.trees, strict=True):
        assert np.array_equal(ta.tree.copy_label, tb.tree.copy_label)
        assert all(np.array_equal(p, q) for p, q in zip(ta.tree.parents, tb.tree.parents, strict=True))
        for Wa, Wb in zip(ta.weights, tb.weights, strict=True):
            assert Wa.shape == Wb.shape and (Wa.nnz == 0 or abs(Wa - Wb).max() <= 1e-6)
    if X is not None:
        assert abs(a.predict(X) - b.predict(X)).max() <= 1e-6
