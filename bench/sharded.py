"""Driver and worker memory against N: the sharded fit (rows in shards) beside the driver fit.

    python bench/sharded.py [--docs 100000,400000] [--labels 10000] [--work /tmp/xmc-sharded]
                            [--out bench/results]

Synthetic raw text (`xmc synth --format jsonl`, multi-sense labels) with the largest N generated
once (the first n documents are the same whatever n), featurized by Spark at every N with the
product's defaults (`xmc featurize`), then trained twice with `xmc train --data BUNDLE --executor
ray --validation-fraction 0.1`: `--data-plane shards` (the driver reads no row) and
`--data-plane driver` (the train split loaded into the driver). Each run is a process of its own;
the figures come from the model's manifest: fit seconds, the driver's peak RSS, the largest
worker's peak RSS, held-out P@1 of the kept round. Prints a table and the growth of the driver's
peak RSS from the smallest to the largest N (issue 19's bar: at most 1.25x while N grows 4x).
Bundles are kept in --work between runs (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
XMC = [sys.executable, "-m", "xmc.cli"]


def sh(cmd: list[str], log: Path) -> float:
    """Run a command (output to ``log``), fail loudly; its wall seconds."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def bundle(work: Path, n_docs: int, n_labels: int, max_docs: int) -> tuple[Path, float]:
    """The featurized bundle of the first ``n_docs`` documents (made once), and featurize seconds."""
    corpus = work / f"synth-L{n_labels}-N{max_docs}"
    if not corpus.is_dir():
        sh([*XMC, "synth", "--out", str(corpus), "--format", "jsonl", "--n-labels", str(n_labels),
            "--train", str(max_docs), "--test", "1000"], work / "synth.log")
    out = work / f"bundle-L{n_labels}-N{n_docs}"
    stamp = work / f"{out.name}.featurize-seconds"
    if stamp.is_file():
        return out, float(stamp.read_text())
    text = work / f"train-{n_docs}.jsonl"
    with open(corpus / "train.jsonl") as src, open(text, "w") as dst:
        for i, line in enumerate(src):
            if i == n_docs:
                break
            dst.write(line)
    seconds = sh([*XMC, "featurize", "--input", str(text), "--out", str(out)],
                 work / f"featurize-{n_docs}.log")
    text.unlink()
    stamp.write_text(f"{seconds:.1f}")
    return out, seconds


def train(work: Path, data: Path, plane: str) -> dict[str, Any]:
    model = work / f"model-{data.name}-{plane}"
    shutil.rmtree(model, ignore_errors=True)
    wall = sh([*XMC, "train", "--data", str(data), "--model", str(model), "--executor", "ray",
               "--data-plane", plane, "--validation-fraction", "0.1", "--work-dir", str(work)],
              work / f"train-{data.name}-{plane}.log")
    info = json.loads((model / "manifest.json").read_text())["info"]
    kept = info["rounds"][info.get("best_round", 0)]
    shutil.rmtree(model)
    return {"plane": plane, "fit_s": info["seconds_fit"], "wall_s": wall,
            "driver_rss_mib": info["peak_rss_mib"]["driver"],
            "worker_rss_mib": info["peak_rss_mib"].get("workers"), "P@1": kept["validation"]["P@1"],
            "P@5": kept["validation"]["P@5"], "shards": info.get("shards", {}).get("count")}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| N | data plane | fit s | driver peak RSS MiB | largest worker RSS MiB | held-out P@1 | P@5 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n_docs']:,} | {r['plane']} | {r['fit_s']:.1f} | {r['driver_rss_mib']:,.0f} | "
                     f"{r['worker_rss_mib'] or 0:,.0f} | {r['P@1']:.2f} | {r['P@5']:.2f} |")
    ns = sorted({r["n_docs"] for r in rows})
    for plane in ("shards", "driver"):
        by_n = {r["n_docs"]: r for r in rows if r["plane"] == plane}
        if len(ns) > 1 and ns[0] in by_n and ns[-1] in by_n:
            small, big = by_n[ns[0]], by_n[ns[-1]]
            worker = (big["worker_rss_mib"] or 0) / max(small["worker_rss_mib"] or 1, 1)
            lines.append(f"\n- {plane}: N x{ns[-1] / ns[0]:.0f} -> driver peak RSS "
                         f"x{big['driver_rss_mib'] / small['driver_rss_mib']:.2f}, largest worker "
                         f"x{worker:.2f}, fit x{big['fit_s'] / small['fit_s']:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="100000,400000")
    ap.add_argument("--labels", type=int, default=10000)
    ap.add_argument("--planes", default="shards,driver")
    ap.add_argument("--work", default="/tmp/xmc-sharded")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    docs = [int(n) for n in args.docs.split(",")]
    rows = []
    for n in docs:
        data, feat_s = bundle(work, n, args.labels, max(docs))
        for plane in args.planes.split(","):
            row = {"n_docs": n, "n_labels": args.labels, "featurize_s": feat_s, **train(work, data, plane)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sharded.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = (f"Sharded fit vs driver fit, L = {args.labels:,} synthetic labels, raw text featurized by Spark "
            f"(`python bench/sharded.py --docs {args.docs}`)\n\n" + markdown(rows))
    (out / "sharded.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
