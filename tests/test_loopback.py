"""Nothing an embedded Spark starts listens beyond loopback: the driver RPC, block manager and web
UI of the session ``xmc featurize`` makes (``xmc.engines.spark.session.spark_session``, which the
``spark`` fixture calls as the CLI does). The same check of a local Ray (GCS, raylet, agents,
workers) is in tests/test_ray.py, on that module's running Ray.

The test featurizes a small corpus in-process, then lists the listening TCP sockets of this
process and all its descendants (psutil): a socket on ``*``, ``0.0.0.0``, ``::`` or the machine's
address fails it.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIBTEX, beyond_loopback, listening_sockets

pytest.importorskip("psutil")


def test_only_loopback_addresses_pass() -> None:
    seen = {("0.0.0.0", 1): "a", ("127.0.0.1", 2): "b", ("::1", 3): "c", ("::", 4): "d",
            ("::ffff:127.0.0.1", 5): "e", ("10.1.2.3", 6): "f"}
    assert beyond_loopback(seen) == ["a on 0.0.0.0:1", "f on 10.1.2.3:6", "d on :::4"]


def test_embedded_spark_listens_on_loopback_only(spark: Any, tmp_path: Path) -> None:
    import os

    from xmc.cli import main

    with gzip.open(BIBTEX / "bibtex_test.txt.gz", "rt") as f:
        lines = f.read().splitlines()
    header = " ".join(["200", *lines[0].split()[1:]])  # XC header: rows, features, labels
    (tmp_path / "small.txt").write_text("\n".join([header, *lines[1:201]]) + "\n")
    assert main(["featurize", "--input", str(tmp_path / "small.txt"), "--out", str(tmp_path / "b")]) == 0
    seen = listening_sockets(os.getpid())
    ui = spark.sparkContext.uiWebUrl
    assert ui and any(port == int(ui.rsplit(":", 1)[1]) for _, port in seen), (ui, seen)  # the UI is up
    assert any("java" in name for name in seen.values()), seen  # the JVM's sockets were seen
    assert beyond_loopback(seen) == []
