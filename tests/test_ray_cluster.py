"""A real Ray cluster (`ray start --head` on 127.0.0.1) running `ray job submit -- python jobs/train.py`.

Its own module, so the local Ray of tests/test_ray.py is shut down before this cluster starts
(two Ray instances on a 2-core machine miss each other's heartbeats).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import BIBTEX, REPO
from xmc import XMCModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_job_submit_to_a_started_cluster(tmp_path: Path) -> None:
    ray_bin = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    dash = _free_port()
    temp = Path("/tmp") / f"xmcray{dash}"  # short: Ray's socket paths must stay under 108 bytes
    gcs_port = _free_port()
    start = [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
             f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        model = tmp_path / "model"
        entry = (f"cd {REPO} && {sys.executable} jobs/train.py --x {BIBTEX / 'X.trn.npz'} "
                 f"--y {BIBTEX / 'Y.trn.npz'} --model {model} --rounds 1 --executor ray")
        submit = [str(ray_bin), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--", "bash", "-c",
                  entry]
        out = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
        logs = out.stdout + out.stderr
        assert out.returncode == 0, logs[-3000:]
        assert "succeeded" in logs
        line = next(x for x in logs.splitlines() if "executor:" in x)
        assert "ray cluster at" in line and f":{gcs_port}," in line  # joined the cluster, started none
        loaded = XMCModel.load(model)
        assert loaded.info["rounds"][-1]["round"] == 1
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
