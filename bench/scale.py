"""Scale curve: fit time, predict throughput and peak memory against N (documents) and L (labels).

    python bench/scale.py [--labels 10000,100000,1000000] [--docs 10000,50000,200000,1000000]
                          [--systems ...] [--timeout 900] [--memory-gib 20] [--out bench/results]

Synthetic multi-sense data (xmc synth, D = 2^17 hashed features, 5,000 test documents) at every
(L, N) of the grid; every system trains in a process of its own with the same guard
(bench/harness.py): a run past --timeout seconds or --memory-gib of RSS is stopped and recorded as
where that system stops fitting, and the system is not tried at larger N for that L. Results
accumulate in OUT/scale.json as they come (a re-run skips cells already there; --fresh starts
over), and OUT/scale.md and OUT/scale.png are redrawn after every cell.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from harness import RESULTS, SYSTEMS, THREADS, WORK, prepare, run

from xmc.research.synth import SynthSpec, generate

N_FEATURES = 2**17
N_TEST = 5000
DEFAULT_SYSTEMS = "xmc-disentangled,xmc-baseline,pecos-xrlinear,omikuji-parabel,napkinxc-plt"


def cell_key(n_labels: int, n_docs: int, system: str) -> str:
    return f"L={n_labels} N={n_docs} {system}"


def markdown(cells: dict[str, dict[str, Any]], header: str) -> str:
    lines = [header, "", "| L | N | system | fit s | predict docs/s | peak RSS MiB | model MB | P@1 | P@5 |",
             "|" + "---|" * 9]
    for c in sorted(cells.values(), key=lambda c: (c["n_labels"], c["n_docs"], c["system"])):
        if c["status"] != "ok":
            lines.append(f"| {c['n_labels']:,} | {c['n_docs']:,} | {c['system']} | stops: {c['status']} |"
                         + " |" * 5)
            continue
        lines.append(f"| {c['n_labels']:,} | {c['n_docs']:,} | {c['system']} | {c['fit_s']:.1f} | "
                     f"{N_TEST / c['predict_s']:,.0f} | {c['peak_rss_mib']:,.0f} | "
                     f"{c['model_bytes'] / 1e6:.1f} | "
                     f"{c['metrics']['P@1']:.2f} | {c['metrics']['P@5']:.2f} |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {r}" for r in ratios(cells)) + "\n"


def ratios(cells: dict[str, dict[str, Any]]) -> list[str]:
    """Our fit time over PECOS XR-Linear's at the largest N of each L where both finished."""
    out = []
    def ok(L: int, N: int, system: str) -> dict[str, Any] | None:
        c = cells.get(cell_key(L, N, system))
        return c if c and c["status"] == "ok" else None

    for L in sorted({c["n_labels"] for c in cells.values()}):
        common = [N for N in {c["n_docs"] for c in cells.values() if c["n_labels"] == L}
                  if ok(L, N, "pecos-xrlinear") and ok(L, N, "xmc-disentangled")]
        if not common:
            continue
        N = max(common)
        pecos = ok(L, N, "pecos-xrlinear")["fit_s"]  # type: ignore[index]
        parts = [f"{name} {c['fit_s'] / pecos:.2f}x" for name in ("xmc-disentangled", "xmc-baseline")
                 if (c := ok(L, N, name))]
        out.append(f"L = {L:,}, N = {N:,} (largest common size): fit time over pecos-xrlinear's "
                   f"({pecos:.1f} s): " + ", ".join(parts))
    return out


def plot(cells: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({c["n_labels"] for c in cells.values()})
    systems = sorted({c["system"] for c in cells.values()}, key=lambda s: (not s.startswith("xmc-"), s))
    what = [("fit_s", "fit seconds"), ("throughput", "predict docs / s"), ("peak_rss_mib", "peak RSS MiB")]
    fig, axes = plt.subplots(len(what), len(labels), figsize=(4.2 * len(labels), 9), squeeze=False)
    docs = sorted({c["n_docs"] for c in cells.values()})
    for j, L in enumerate(labels):
        for s in systems:
            mine = sorted((c for c in cells.values() if c["n_labels"] == L and c["system"] == s),
                          key=lambda c: c["n_docs"])
            ok = [c for c in mine if c["status"] == "ok"]
            for i, (key, title) in enumerate(what):
                ax = axes[i][j]
                ys = [N_TEST / c["predict_s"] if key == "throughput" else c[key] for c in ok]
                line = ax.plot([c["n_docs"] for c in ok], ys, marker="o", label=s)[0]
                stopped = [c for c in mine if c["status"] != "ok"]
                if stopped and ok:  # an x where the system stopped fitting
                    ax.plot([stopped[0]["n_docs"]], [ys[-1]], marker="x", ms=10, color=line.get_color())
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_title(f"{title}, L = {L:,}", fontsize=9)
                ax.set_xlabel("training documents N", fontsize=8)
        for i in range(len(what)):  # after set_xscale, which resets the ticks
            axes[i][j].set_xticks(docs, [f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1000:g}K" for n in docs])
            axes[i][j].minorticks_off()
    axes[0][0].legend(fontsize=7)
    fig.suptitle("x = the system stopped fitting (time or memory limit) at that N", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="10000,100000,1000000")
    ap.add_argument("--docs", default="10000,50000,200000,1000000")
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS)
    ap.add_argument("--timeout", type=float, default=900, help="seconds a run may take (fit + predict)")
    ap.add_argument("--memory-gib", type=float, default=20.0, help="RSS a run may reach (machine: 24 GiB)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--fresh", action="store_true", help="forget earlier cells in OUT/scale.json")
    ap.add_argument("--redraw", action="store_true", help="only redraw scale.md/png from OUT/scale.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "scale.json"
    cells: dict[str, dict[str, Any]] = {}
    if store.exists() and not args.fresh:
        cells = json.loads(store.read_text())["cells"]
    if args.redraw:
        saved = json.loads(store.read_text())
        (args.out / "scale.md").write_text(markdown(cells, saved["header"]))
        plot(cells, args.out / "scale.png")
        return
    systems = [SYSTEMS[s] for s in args.systems.split(",")]
    header = (f"`python bench/scale.py --labels {args.labels} --docs {args.docs} --timeout {args.timeout:g} "
              f"--memory-gib {args.memory_gib:g}` on {THREADS} cores; synthetic data (xmc synth, "
              f"D = {N_FEATURES:,}, {N_TEST:,} test docs); one seed.")
    for L in map(int, args.labels.split(",")):
        stopped = {c["system"] for c in cells.values() if c["n_labels"] == L and c["status"] != "ok"}
        for N in map(int, args.docs.split(",")):
            todo = [s for s in systems if cell_key(L, N, s.name) not in cells and s.name not in stopped]
            if not todo:
                continue
            t0 = time.perf_counter()
            spec = SynthSpec(n_labels=L, n_features=N_FEATURES)
            tr, te = generate(spec, N), generate(spec, N_TEST, "test")
            data = prepare(WORK / "scale" / f"L{L}-N{N}", tr.X, tr.Y, te.X, te.Y, {"spec": str(spec)})
            del tr, te
            print(f"L={L:,} N={N:,}: data in {time.perf_counter() - t0:.0f}s", flush=True)
            for s in todo:
                o = run(s, data, WORK / "scale" / "runs" / f"L{L}-N{N}-{s.name}", seed=0,
                        timeout_s=args.timeout, memory_gib=args.memory_gib)
                cells[cell_key(L, N, s.name)] = {"n_labels": L, "n_docs": N, **o.to_dict()}
                if o.status != "ok":
                    stopped.add(s.name)
                done = "" if o.status != "ok" else (
                    f"fit {o.fit_s:.1f}s, {N_TEST / (o.predict_s or 1):,.0f} docs/s, "
                    f"RSS {o.peak_rss_mib:,.0f} MiB, P@1 {o.metrics['P@1']:.2f}")
                print(f"  {s.name:>18}: {done or o.status}", flush=True)
                store.write_text(json.dumps({"header": header, "cells": cells}, indent=2))
                (args.out / "scale.md").write_text(markdown(cells, header))
                plot(cells, args.out / "scale.png")
            shutil.rmtree(data)
            shutil.rmtree(WORK / "scale" / "runs", ignore_errors=True)


if __name__ == "__main__":
    main()
