"""The one SparkSession factory of the jobs, tests and notebooks.

Three ways in, one code path: ``xmc featurize`` (embedded ``local[*]``), ``spark-submit
jobs/featurize.py`` (the master and settings come from spark-submit) and a notebook (a session
that is already running is reused). Settings come from a spark-defaults style file
(``cluster_configs/spark/``) and ``key=value`` overrides.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from xmc.errors import ParamError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
LOCAL_DEFAULTS: dict[str, str] = {
    # One machine: a few shuffle partitions per core instead of 200 (AQE still coalesces them).
    "spark.sql.shuffle.partitions": str(4 * (os.cpu_count() or 1)),
    # The driver is the executor in local mode; its heap bounds the job's memory. bench/featurize.py
    # runs 200K and 400K documents at 1g with the same peak; 2g leaves headroom.
    "spark.driver.memory": "2g",
    "spark.ui.showConsoleProgress": "false",
}


LOCAL_LOOPBACK: dict[str, str] = {
    # An embedded Spark serves nobody else: its driver RPC, block manager and UI listen on loopback
    # only (SPARK_LOCAL_IP=127.0.0.1 also binds the UI there). --spark-conf overrides them.
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


def read_conf_file(path: str | Path) -> dict[str, str]:
    """Parse a spark-defaults.conf file: ``key value`` (or ``key=value``) per line, ``#`` comments."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: no such Spark config file")
    conf: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1) if "=" not in line.split(None, 1)[0] else line.split("=", 1)
        if len(parts) != 2 or not parts[0].startswith("spark.") or not parts[1].strip():
            raise ParamError(f"{path}:{lineno}: expected 'spark.some.key value', got {raw.strip()!r}")
        conf[parts[0].strip()] = parts[1].strip()
    return conf


def parse_conf_pairs(pairs: list[str]) -> dict[str, str]:
    """``["spark.a=1", ...]`` (repeated ``--spark-conf`` flags) -> dict."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("spark."):
            raise ParamError(f"--spark-conf {pair!r}: expected spark.some.key=value")
        conf[key.strip()] = value.strip()
    return conf


def under_spark_submit() -> bool:
    """True inside ``spark-submit`` (or ``pyspark``), which already chose the master and settings."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(
    master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "xmc"
) -> tuple[SparkSession, bool]:
    """Return ``(session, created)``; stop it after the job only when ``created``.

    An active session (notebook, test fixture) is reused as is. Otherwise ``master`` wins, then
    spark-submit's choice, then ``local[*]`` with ``LOCAL_DEFAULTS``; ``conf`` overrides those.
    Python workers must run this interpreter (else they start the system python without our
    packages); the featurizer runs Python on executors only to embed text with a --text-encoder.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    settings: dict[str, str] = {}
    if master is not None or not under_spark_submit():
        master = master or DEFAULT_MASTER
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            settings.update(LOCAL_DEFAULTS)
            settings.update(LOCAL_LOOPBACK)
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # Our errors are reported as one message (bad input) or one line and a log file (anything
    # else, the Java stack inside); Spark's own task-failure stacks would bury them.
    session.sparkContext.setLogLevel(os.environ.get("XMC_SPARK_LOG_LEVEL", "OFF"))
    return session, True
