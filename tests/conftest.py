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


# pytest-xdist (2 workers, pyproject.toml) runs whole modules on its workers, one "scope" at a time
# (the scheduler below). The modules of one engine are one scope: those with the in-process Spark
# (one JVM and one cold featurize, not one per worker) and those with a local Ray (the local Ray of
# test_ray is shut down before test_ray_cluster starts its two nodes; two Rays at once on 2 cores
# miss each other's heartbeats).
ENGINE_GROUPS: dict[str, str] = {
    "test_featurize": "spark", "test_loopback": "spark", "test_nightly": "spark",
    "test_text_encoder": "spark", "test_ray": "ray", "test_ray_cluster": "ray",
}
LONGEST_FIRST = ["spark", "ray", "test_tracking", "test_spark_cluster", "test_browser", "test_prime",
                 "test_notebooks"]
"""Scopes handed out first (serial seconds on 2 cores: about 95, 60, 45, 42, 23, 14, 12): the many
short modules fill in behind them, so no worker starts a long scope when the other is done."""


def scope_of(nodeid: str) -> str:
    """A test's scheduling scope: its module's engine group, else its module."""
    module = Path(nodeid.split("::", 1)[0]).stem
    return ENGINE_GROUPS.get(module, module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        scope = scope_of(item.nodeid)
        return LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every module stays whole and in its own order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduler with ``scope_of`` as the scope, in collection order (longest first)."""
    from xdist.scheduler import LoadScopeScheduling

    class EngineScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False
    return EngineScopes(config, log)


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

    session, created = spark_session("local[2]", {  # the web UI on, as users get it (tests/test_loopback.py)
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2", "spark.driver.memory": "1g"})
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
    """Two fits of one model: every tree's structure equal, feature weights, weights (and predictions on X)
    to 1e-6."""
    assert len(a.trees) == len(b.trees)
    for ta, tb in zip(a.trees, b.trees, strict=True):
        assert np.array_equal(ta.tree.copy_label, tb.tree.copy_label)
        assert (ta.feature_weights is None) == (tb.feature_weights is None)
        if ta.feature_weights is not None:
            assert np.abs(ta.feature_weights - tb.feature_weights).max() <= 1e-6
        assert all(np.array_equal(p, q) for p, q in zip(ta.tree.parents, tb.tree.parents, strict=True))
        for Wa, Wb in zip(ta.weights, tb.weights, strict=True):
            assert Wa.shape == Wb.shape and (Wa.nnz == 0 or abs(Wa - Wb).max() <= 1e-6)
    if X is not None:
        assert abs(a.predict(X) - b.predict(X)).max() <= 1e-6


class StopAtEpoch:
    """An observer that interrupts the fit when it hears of epoch ``stop`` (before it is checkpointed)."""

    def __init__(self, stop: int) -> None:
        self.stop, self.heard = stop, []

    def round_started(self, r: int, tree: int = 0) -> None: ...

    def round_finished(self, record: dict) -> None: ...

    def dense_epoch(self, record: dict) -> None:
        self.heard.append(record["epoch"])
        if record["epoch"] == self.stop:
            raise KeyboardInterrupt


def listening_sockets(root: int) -> dict[tuple[str, int], str]:
    """(ip, port) -> process name of every listening TCP socket of process ``root`` and its
    descendants (the JVM of an in-process Spark, the GCS, raylet, agents and workers of a local Ray)."""
    import psutil

    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found: dict[tuple[str, int], str] = {}
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                found[(c.laddr.ip, c.laddr.port)] = name
    return found


def beyond_loopback(seen: dict[tuple[str, int], str]) -> list[str]:
    """The sockets of ``seen`` bound to anything but loopback (``*``, ``0.0.0.0``, ``::``, the
    machine's address), as 'name on ip:port'."""
    import ipaddress

    def loopback(ip: str) -> bool:
        addr = ipaddress.ip_address(ip.split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_loopback

    return [f"{name} on {ip}:{port}" for (ip, port), name in sorted(seen.items()) if not loopback(ip)]
