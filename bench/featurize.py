"""Featurize a synthetic raw-text corpus (``xmc synth --format jsonl``) with Spark: docs/s and peak memory.

    python bench/featurize.py                      # 200K documents, embedded local[*] Spark
    python bench/featurize.py --docs 20000 --master spark://127.0.0.1:7077

Prints the corpus size, wall time and docs/s of ``featurize`` alone (the JVM start is timed
apart), and peak memory of each process: the Python driver (ru_maxrss), the driver JVM and every
executor (Spark's executor metrics: peak heap and process-tree RSS; in local mode the driver JVM is
the executor). The corpus is generated in a child process so its strings do not count.
Not part of the tests: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MiB = 1 << 20


def generate(path: Path, n_docs: int) -> None:
    """Write the corpus from a child process (its memory is not the featurizer's)."""
    subprocess.run([sys.executable, "-m", "xmc.cli", "synth", "--format", "jsonl", "--out",
                    str(path.parent / "synth"), "--train", str(n_docs), "--test", "0", "--n-labels", "500",
                    "--n-features", "30000", "--words-per-doc", "80"],
                   check=True, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    os.replace(path.parent / "synth" / "train.jsonl", path)


def executor_peaks(spark: Any) -> list[dict[str, Any]]:
    """Peak memory metrics per executor from the driver's REST API (``driver`` = the driver JVM)."""
    url = spark.sparkContext.uiWebUrl
    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{url}/api/v1/applications/{app}/allexecutors", timeout=10) as r:
        execs = json.load(r)
    out = []
    for e in execs:
        peak = e.get("peakMemoryMetrics") or {}
        out.append({"executor": e["id"], "heap_peak_mib": round(peak.get("JVMHeapMemory", 0) / MiB),
                    "rss_peak_mib": round(peak.get("ProcessTreeJVMRSSMemory", 0) / MiB),
                    "max_heap_mib": round(e.get("maxMemory", 0) / MiB)})
    return out


def slowest_stages(spark: Any, n: int) -> list[str]:
    """The n longest Spark stages (seconds, tasks, call site): where the time goes."""
    url = f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}/stages"
    with urllib.request.urlopen(url, timeout=10) as r:
        stages = json.load(r)
    fmt = "%Y-%m-%dT%H:%M:%S.%fGMT"

    def seconds(s: dict[str, Any]) -> float:
        if not s.get("completionTime") or not s.get("submissionTime"):
            return 0.0
        end, start = (datetime.strptime(s[k], fmt) for k in ("completionTime", "submissionTime"))
        return (end - start).total_seconds()

    return [f"{seconds(s):7.2f}s  {s['numTasks']:4d} tasks  {s['name'][:70]}"
            for s in sorted(stages, key=seconds, reverse=True)[:n]]


def vm_hwm_mib(pid: int) -> int | None:
    """Peak resident set of a live process (Linux), from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--master", default=None, help="Spark master (default: local[*])")
    ap.add_argument("--work", default=None, help="folder for the corpus and bundle (default: a temp dir)")
    ap.add_argument("--ngram-max", type=int, default=1)
    ap.add_argument("--stages", type=int, default=0, help="also print the N slowest Spark stages")
    ap.add_argument("--driver-memory", default=None,
                    help="JVM heap of the local driver/executor "
                         "(default: xmc.engines.spark.session.LOCAL_DEFAULTS)")
    args = ap.parse_args()

    from xmc.engines.spark.featurize import featurize
    from xmc.engines.spark.params import FeaturizeParams
    from xmc.engines.spark.session import spark_session

    work = Path(args.work or tempfile.mkdtemp(prefix="xmc-bench-featurize-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    t0 = time.perf_counter()
    if not corpus.exists():
        generate(corpus, args.docs)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    conf = {"spark.ui.enabled": "true", "spark.executor.processTreeMetrics.enabled": "true"}
    if args.driver_memory:
        conf["spark.driver.memory"] = args.driver_memory
    spark, _ = spark_session(args.master, conf, app_name="xmc-bench-featurize")
    spark.sparkContext.setLogLevel("ERROR")
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    manifest = featurize(spark, [corpus], work / "bundle", FeaturizeParams(ngram_max=args.ngram_max))
    seconds = time.perf_counter() - t0
    time.sleep(12)  # executors report metrics with their heartbeat (10 s)
    peaks = executor_peaks(spark)
    stages = slowest_stages(spark, args.stages) if args.stages else []
    python_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    gateway = spark.sparkContext._gateway
    jvm_pid = gateway.proc.pid if gateway is not None and getattr(gateway, "proc", None) else None
    jvm_hwm = vm_hwm_mib(jvm_pid) if jvm_pid else None
    master = spark.sparkContext.master
    spark.stop()
    from xmc.io.features import load_split

    t0 = time.perf_counter()
    split = load_split(work / "bundle")
    load_s = time.perf_counter() - t0
    rows = manifest["splits"]["train"]["rows"]
    report = {
        "docs": rows, "corpus_mib": round(corpus.stat().st_size / MiB), "master": master,
        "driver_memory": conf.get("spark.driver.memory", "default"),
        "generate_s": round(gen_s, 1), "spark_start_s": round(start_s, 1),
        "featurize_s": round(seconds, 1), "docs_per_s": round(rows / seconds),
        "phases_s": manifest["seconds"], "n_features": manifest["n_features"],
        "n_labels": manifest["n_labels"],
        "feat_nnz": manifest["splits"]["train"]["feat_nnz"],
        "python_driver_peak_rss_mib": python_peak,
        "driver_jvm_peak_rss_mib (VmHWM)": jvm_hwm, "executors": peaks,
        "load_split_s": round(load_s, 2), "X_shape": list(split.X.shape),
        "bundle_mib": round(sum(f.stat().st_size for f in (work / "bundle").rglob("*") if f.is_file()) / MiB),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if stages:
        print("slowest stages:\n" + "\n".join(stages))


if __name__ == "__main__":
    main()
