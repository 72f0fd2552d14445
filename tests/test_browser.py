"""End to end in a real browser: headless Chromium opens the MLflow UI of a test-started `mlflow server`
over a store holding a demo-like run, and finds the rounds (child runs) and the champion version.

Skipped where no Chromium is installed, unless ``XMC_REQUIRE_BROWSER=1`` (CI sets it after
installing the Debian packages ``chromium``/``chromium-driver`` in ``.ci/run``): there it fails.
The page is read with ``--dump-dom`` after the single-page app has loaded (Chromium's virtual time
budget lets its requests finish); one screenshot of the run page is kept next to the store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_tracking import child_env, free_port, sqlite_uri, stop, wait_http
from xmc import XMCParams
from xmc.core.fit import fit
from xmc.engines.tracking import TrackingParams
from xmc.engines.training_run import training_run
from xmc.research.synth import SynthSpec, generate

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--virtual-time-budget=20000"]


def browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if found is None:
        if os.environ.get("XMC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no browser among {BROWSERS} and XMC_REQUIRE_BROWSER=1 (CI installs chromium)")
        pytest.skip(f"no browser among {BROWSERS}: apt-get install chromium to run this test")
    return found


def chromium(binary: str, profile: Path, *args: str) -> str:
    r = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store like `make demo` leaves: a named parent run, child runs per round, a champion."""
    folder = tmp_path_factory.mktemp("browser")
    block = generate(SynthSpec(n_labels=40, n_features=300), 500)
    params = XMCParams().replace(max_leaf_size=8, rounds=1, validation_fraction=0.2)
    tracking = TrackingParams(tracking_uri=sqlite_uri(folder), experiment="demo-like", run_name="demo-like",
                              register_as="demo-like")
    with training_run(tracking, params, block.X, block.Y) as run:
        model = fit(block.X, block.Y, params, label_names=[f"tag-{j}" for j in range(40)], observer=run)
        model.save(folder / "model")
        result = run.finish(model, folder / "model", fit_seconds=1.0)
    return {"folder": folder, "result": result, "rounds": len(model.info["rounds"])}


def test_mlflow_ui_shows_rounds_and_champion(demo_store: dict[str, Any]) -> None:
    binary = browser()
    folder, result = demo_store["folder"], demo_store["result"]
    port = free_port()
    log = folder / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", result.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), cwd=folder,
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", proc, log)
        page = f"{base}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
        run_dom = chromium(binary, folder / "profile-run", "--dump-dom", page)
        assert "demo-like" in run_dom and "Child runs" in run_dom, run_dom[-2000:]
        for r in range(demo_store["rounds"]):
            assert f"round-{r}" in run_dom
        model_dom = chromium(binary, folder / "profile-model", "--dump-dom", f"{base}/#/models/demo-like")
        assert "champion" in model_dom and "Version 1" in model_dom, model_dom[-2000:]
        shot = folder / "run.png"
        chromium(binary, folder / "profile-shot", "--window-size=1400,1000", f"--screenshot={shot}", page)
        assert shot.stat().st_size > 10_000
    finally:
        stop(proc)
