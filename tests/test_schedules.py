"""The nightly schedules under cluster_configs/schedule/: cron, systemd timer, Kubernetes CronJob -> RayJob.

Each must run ``xmc nightly --config FILE`` on a valid schedule, and every nightly config they
carry must load with ``xmc.ops.nightly.config.load_config`` (the same validation the job applies)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from xmc.ops.nightly.config import load_config, params_from_dict

SCHEDULE = Path(__file__).resolve().parents[1] / "cluster_configs" / "schedule"
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
               ("day of week", 0, 7))


def check_cron(expr: str) -> None:
    """Five fields of numbers, ranges, lists and steps within bounds (names and @macros refused)."""
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"{expr!r}: a cron expression has 5 fields, got {len(parts)}")
    for part, (name, lo, hi) in zip(parts, CRON_FIELDS, strict=True):
        for item in part.split(","):
            m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", item)
            if m is None:
                raise ValueError(f"{expr!r}: {name} {item!r} is not a number, range, list or step")
            for bound in (m.group(2), m.group(3)):
                if bound is not None and not lo <= int(bound) <= hi:
                    raise ValueError(f"{expr!r}: {name} {bound} is outside [{lo}, {hi}]")
            if m.group(2) and m.group(3) and int(m.group(2)) > int(m.group(3)):
                raise ValueError(f"{expr!r}: {name} range {item!r} runs backwards")
            if m.group(4) is not None and int(m.group(4)) == 0:
                raise ValueError(f"{expr!r}: {name} step 0")


@pytest.mark.parametrize("expr", ["15 2 * * *", "*/10 0-6 1,15 * 1-5", "0 0 * * 7"])
def test_cron_checker_accepts_valid(expr: str) -> None:
    check_cron(expr)


@pytest.mark.parametrize("expr", ["15 2 * *", "60 2 * * *", "0 25 * * *", "0 0 0 * *", "5-1 * * * *",
                                  "*/0 * * * *", "@daily x y z w"])
def test_cron_checker_refuses_invalid(expr: str) -> None:
    with pytest.raises(ValueError):
        check_cron(expr)


def nightly_config_arg(command: str) -> str:
    """The FILE of ``xmc nightly --config FILE`` in a shell command (the xmc may be a full path)."""
    argv = shlex.split(command)
    at = next(i for i, a in enumerate(argv) if a == "xmc" or a.endswith("/xmc"))
    assert argv[at + 1:at + 3] == ["nightly", "--config"], command
    return argv[at + 3]


def test_crontab_runs_the_nightly_with_the_shipped_config() -> None:
    lines = [ln for ln in (SCHEDULE / "xmc-nightly.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)  # /etc/cron.d format: 5 time fields, user, command
    check_cron(" ".join(fields[:5]))
    command = fields[6].split("&&", 1)[1].split(">>")[0]
    assert Path(nightly_config_arg(command)).name == "nightly.json"
    load_config(SCHEDULE / "nightly.json")


def test_systemd_timer_and_service() -> None:
    def ini(name: str) -> configparser.ConfigParser:
        cp = configparser.ConfigParser(interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string((SCHEDULE / name).read_text())
        return cp

    timer, service = ini("xmc-nightly.timer"), ini("xmc-nightly.service")
    assert re.fullmatch(r"\*-\*-\* \d{2}:\d{2}:\d{2}", timer["Timer"]["OnCalendar"])
    assert timer["Timer"]["Persistent"] == "true" and timer["Install"]["WantedBy"] == "timers.target"
    assert service["Service"]["Type"] == "oneshot"
    assert nightly_config_arg(service["Service"]["ExecStart"]).endswith("nightly.json")
    assert set(service["Service"]["SuccessExitStatus"].split()) == {"3", "4"}  # rejected, lock held


def test_k8s_cronjob_submits_the_nightly_rayjob() -> None:
    docs = [d for d in yaml.safe_load_all((SCHEDULE / "k8s-cronjob.yaml").read_text()) if d]
    by_kind: dict[str, dict[str, Any]] = {d["kind"]: d for d in docs}
    assert set(by_kind) >= {"CronJob", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"}
    cron = by_kind["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    check_cron(cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    assert pod["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]
    [container] = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = by_kind["ConfigMap"]
    cm_volume = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name")
                     == config_map["metadata"]["name"])
    rayjob_file = Path(container["command"][3])
    assert str(rayjob_file.parent) == mount[cm_volume]
    rule = by_kind["Role"]["rules"][0]
    assert "ray.io" in rule["apiGroups"] and "rayjobs" in rule["resources"] and "create" in rule["verbs"]

    rayjob = yaml.safe_load(config_map["data"][rayjob_file.name])
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert "generateName" in rayjob["metadata"]  # a fresh RayJob per night
    config_path = Path(nightly_config_arg(rayjob["spec"]["entrypoint"]))
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head_mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    head_volumes = {v["name"]: v for v in head["volumes"]}
    config_volume = head_volumes[head_mounts[str(config_path.parent)]]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    params = params_from_dict(json.loads(config_map["data"][config_path.name]))
    params.require_data()
    assert params.executor.executor == "ray" and params.lock_path.startswith("/data/")
