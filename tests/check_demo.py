"""What a user meets after `make demo`, measured on its MLflow store (issue 20's bars).

    python tests/check_demo.py [runs/bibtex]

Checks: every logged metric has a real timestamp; the parent run has a held-out P@1 curve
(``val_P_at_1``) with at least 2 steps; run durations are the training's; the registered
champion, loaded as a pyfunc, answers label names; served with ``mlflow models serve``, a raw-text
request to this feature model answers HTTP 400 whose top-level message names the problem.
Prints one line per check and exits 1 if any fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "bibtex-demo"


def main(run_dir: Path) -> int:
    import mlflow
    import scipy.sparse as sp

    db = (run_dir / "mlflow.db").resolve()
    uri = f"sqlite:///{db}"
    results: list[tuple[bool, str]] = []

    con = sqlite3.connect(db)
    n, zero, lo = con.execute("SELECT count(*), sum(timestamp = 0), min(timestamp) FROM metrics").fetchone()
    results.append((n > 0 and zero == 0, f"metrics logged: {n}, with timestamp 0: {zero}, earliest "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(lo / 1000))} UTC"))

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(NAME)
    assert exp is not None, f"no experiment {NAME} in {uri}"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda r: r.info.run_name)
    curve = sorted(client.get_metric_history(parent.info.run_id, "val_P_at_1"), key=lambda m: m.step)
    results.append((len(curve) >= 2, f"parent run {parent.info.run_name!r}: held-out P@1 by round "
                    + ", ".join(f"step {m.step}: {m.value:.2f}" for m in curve)))
    fit_s = parent.data.metrics.get("fit_seconds", 0.0)
    took = (parent.info.end_time - parent.info.start_time) / 1000
    results.append((took >= fit_s, f"parent run lasted {took:.1f} s, fit {fit_s:.1f} s"))
    for c in children:
        secs = sum(v for k, v in c.data.metrics.items() if k.startswith("seconds_"))
        lasted = (c.info.end_time - c.info.start_time) / 1000
        results.append((lasted >= 0.5 * secs, f"child {c.info.run_name}: open {lasted:.2f} s, "
                        f"its phases {secs:.2f} s, status {c.info.status}"))

    os.environ["MLFLOW_TRACKING_URI"] = uri
    version = client.get_model_version_by_alias(NAME, "champion")
    results.append((bool(version.description), f"champion v{version.version} description: "
                    f"{(version.description or '')[:90]}..."))
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    X = sp.load_npz(REPO / "data" / "bibtex" / "X.tst.npz").tocsr()
    import pandas as pd

    rows = {"indices": [X[i].indices.tolist() for i in range(2)],
            "values": [X[i].data.tolist() for i in range(2)]}
    out = model.predict(pd.DataFrame(rows), params={"topk": 3})
    names = set((REPO / "data" / "bibtex" / "label_names.txt").read_text().split())
    labels = [lab for row in out["labels"] for lab in row]
    results.append((bool(labels) and all(lab in names for lab in labels),
                    f"champion as pyfunc answers: {out['labels'].tolist()}"))

    status, message = serve_and_ask(uri, run_dir)
    results.append((status == 400 and "no text vectorizer" in message,
                    f"raw text to the served feature model: HTTP {status}, message: {message[-160:]!r}"))
    for ok, line in results:
        print(("PASS " if ok else "FAIL ") + line)
    return 0 if all(ok for ok, _ in results) else 1


def serve_and_ask(uri: str, run_dir: Path) -> tuple[int, str]:
    """`mlflow models serve` on the champion, one raw-text request, then stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (run_dir / "check-serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                             f"models:/{NAME}@champion", "--env-manager", "local", "--host", "127.0.0.1",
                             "--port", str(port),
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        body = json.dumps({"inputs": ["a raw document about machine learning"]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()).get("message", "")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "runs" / "bibtex")))
