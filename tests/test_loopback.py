"""Nothing a run starts listens beyond loopback: the local Ray of ``--executor ray`` (GCS, raylet,
agents, workers) and the embedded Spark of ``xmc featurize`` (driver, block manager, UI).

Each test runs the real command in a subprocess and, while it runs, lists the listening TCP
sockets of that process and all its descendants (psutil), asserting every one is bound to a
loopback address. A socket on ``*``, ``0.0.0.0``, ``::`` or the machine's address fails the test.
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
BIBTEX = REPO / "data" / "bibtex"


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _listening(root: int) -> dict[tuple[str, int], str]:
    """(ip, port) -> process name of every listening TCP socket of ``root`` and its descendants."""
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


def _watch(cmd: list[str], tmp: Path, timeout: float = 420) -> tuple[int, dict[tuple[str, int], str], str]:
    """Run ``cmd``, sampling its sockets every 0.2 s; returns (exit code, every socket seen, stderr)."""
    env = {**os.environ, "XMC_PROGRESS": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": str(REPO)}
    err = tmp / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=f)
        seen: dict[tuple[str, int], str] = {}
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(_listening(proc.pid))
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait()
    return rc, seen, err.read_text()


def _exposed(seen: dict[tuple[str, int], str]) -> list[str]:
    return [f"{name} on {ip}:{port}" for (ip, port), name in sorted(seen.items()) if not _loopback(ip)]


def test_local_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    rc, seen, err = _watch([sys.executable, "-m", "xmc.cli", "train", "--x", str(BIBTEX / "X.trn.npz"),
                            "--y", str(BIBTEX / "Y.trn.npz"), "--model", str(tmp_path / "m"),
                            "--executor", "ray", "--num-workers", "2", "--rounds", "1",
                            "--max-leaf-size", "100"], tmp_path)
    assert rc == 0, err[-2000:]
    names = set(seen.values())
    assert any("raylet" in n for n in names) and any("gcs" in n for n in names), seen  # we saw Ray itself
    assert _exposed(seen) == []


def test_embedded_spark_listens_on_loopback_only(tmp_path: Path) -> None:
    # a small corpus: the JVM, its block manager and every stage start all the same, in less time
    with gzip.open(BIBTEX / "bibtex_test.txt.gz", "rt") as f:
        lines = f.read().splitlines()
    header = " ".join(["200", *lines[0].split()[1:]])  # XC header: rows, features, labels
    (tmp_path / "small.txt").write_text("\n".join([header, *lines[1:201]]) + "\n")
    rc, seen, err = _watch([sys.executable, "-m", "xmc.cli", "featurize", "--input",
                            str(tmp_path / "small.txt"), "--out", str(tmp_path / "b")], tmp_path)
    assert rc == 0, err[-2000:]
    assert any("java" in n for n in seen.values()), seen  # the JVM's sockets were seen
    assert _exposed(seen) == []
