"""Nightly retrain with a promotion gate: ``xmc nightly --config nightly.json``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from xmc.cli.common import job_main, print_json

DESCRIPTION = """Featurize (raw corpus, Spark) -> train -> score candidate and champion on the frozen
evaluation set -> register the candidate -> promote: `champion` moves (the old one kept as
`previous_champion`) only if the candidate beats it by `margin` points on `metric` and its
latency and size stay within `max_latency_ratio` / `max_size_ratio`; else the version is tagged
decision=rejected with the reason. Config: a JSON object of xmc.ops.nightly.config.NightlyParams fields
(relative paths are relative to the config file), e.g.
  {"input": "corpus/train.jsonl", "eval_input": "corpus/frozen_eval.jsonl", "model_name": "tags",
   "tracking_uri": "sqlite:////srv/mlflow/mlflow.db", "train": {"rounds": 2}, "margin": 0.2}

Exit codes (for the scheduler):
  0  promoted (or first version: it became champion)
  3  rejected: the candidate is registered and tagged, champion unchanged
  4  another nightly holds the lock: this run did nothing
  2  bad input or config (message names the file and field)
  1  unexpected failure (MLflow unreachable, crash): re-running the same night is safe and
     reuses its finished steps (work_dir/run_id)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="JSON file of xmc.ops.nightly.config.NightlyParams fields")
    p.add_argument("--run-id", help="name of the night (default: config's run_id, else the UTC date); "
                                    "re-running an id resumes it")


def run(args: argparse.Namespace) -> int:
    from xmc.engines.tracking import TrackingError
    from xmc.ops.nightly.config import (
        EXIT_FAILED,
        EXIT_LOCKED,
        EXIT_PROMOTED,
        EXIT_REJECTED,
        LockHeldError,
        load_config,
    )
    from xmc.ops.nightly.run import run_nightly as nightly

    params = load_config(args.config)
    if args.run_id:
        params = dataclasses.replace(params, run_id=args.run_id)
    try:
        result = nightly(params)
    except LockHeldError as e:
        print(f"xmc nightly: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except TrackingError as e:
        print(f"xmc nightly: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print_json(result)
    return EXIT_PROMOTED if result["decision"] == "promoted" else EXIT_REJECTED


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc nightly", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
