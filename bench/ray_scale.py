"""Ray executor scaling: local vs Ray with 1 and 2 workers on one synthetic dataset.

    python bench/ray_scale.py [--labels 20000] [--docs 50000] [--rounds 1]

Each configuration fits the same model (same params, same data; the models are checked equal).
Ray's start-up (ray.init, worker processes importing torch) is timed apart from the fit. Bars
(issue 5): fit with 2 Ray workers >= 1.6x faster than with 1; Ray end to end no slower than the
local executor beyond Ray's fixed start cost. Also prints the peak memory of a worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from xmc import LocalExecutor, XMCParams
from xmc.core.fit import fit
from xmc.params import ExecutorParams
from xmc.research.synth import SynthSpec, generate


def timed_fit(X, Y, params, executor):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    model = fit(X, Y, params, executor=executor)
    return model, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, default=20000)
    ap.add_argument("--docs", type=int, default=50000)
    ap.add_argument("--features", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batches-per-worker", type=int, default=ExecutorParams().batches_per_worker)
    ap.add_argument("--skip-local", action="store_true", help="only the Ray runs (no equality check)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from xmc.engines.ray_executor import RayExecutor

    spec = SynthSpec(n_labels=args.labels, n_features=args.features)
    data = generate(spec, args.docs)
    params = XMCParams().replace(rounds=args.rounds)
    print(f"synthetic: {args.docs} docs, {args.labels} labels, {args.features} features, "
          f"nnz(X) {data.X.nnz}, rounds {args.rounds}; {os.cpu_count()} cores", flush=True)
    ref, local_s = None, float("nan")
    if not args.skip_local:
        ref, local_s = timed_fit(data.X, data.Y, params, LocalExecutor(show_progress=False))
        print(f"local executor: fit {local_s:.1f}s", flush=True)
    rows = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        ex = RayExecutor(ExecutorParams(executor="ray", num_workers=workers,
                                        batches_per_worker=args.batches_per_worker), show_progress=False)
        ray.get([ray.remote(lambda: __import__("torch").get_num_threads()).remote() for _ in range(workers)])
        start_s = time.perf_counter() - t0
        model, fit_s = timed_fit(data.X, data.Y, params, ex)
        same = ref is not None and all(abs(a - b).max() <= 1e-6
                                       for a, b in zip(model.weights, ref.weights, strict=True))
        peak = max(s["worker_peak_rss_mib"] for s in ex.stats)
        rows[workers] = {"ray_start_s": round(start_s, 1), "fit_s": round(fit_s, 1),
                         "worker_peak_rss_mib": peak, "same_model_as_local": bool(same)}
        print(f"ray, {workers} worker(s): start {start_s:.1f}s, fit {fit_s:.1f}s, worker peak RSS "
              f"{peak:.0f} MiB, same model as local: {same}", flush=True)
        ex.shutdown()
    speedup = rows[1]["fit_s"] / rows[2]["fit_s"]
    overhead = rows[2]["fit_s"] - local_s
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}x (bar >= 1.6x: {'PASS' if speedup >= 1.6 else 'FAIL'})")
    print(f"ray (2 workers) fit - local fit: {overhead:+.1f}s; ray start {rows[2]['ray_start_s']:.1f}s "
          f"(bar: no slower beyond the start cost: {'PASS' if overhead <= 0.1 * local_s else 'FAIL'})")
    print(json.dumps({"local_fit_s": round(local_s, 1), "ray": rows, "speedup_2_vs_1": round(speedup, 2),
                      "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "n_clusters": int(model.tree.n_clusters), "labels": args.labels, "docs": args.docs,
                      "batches_per_worker": args.batches_per_worker},
                     indent=1))


if __name__ == "__main__":
    main()
