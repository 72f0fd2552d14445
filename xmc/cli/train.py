"""Train an XMC model: ``xmc train --x X.trn.npz --y Y.trn.npz --model DIR [--PARAM VALUE ...]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmc.cli.common import (
    add_dataclass_flags,
    add_param_flags,
    dataclass_from_args,
    job_main,
    params_from_args,
    print_json,
)

if TYPE_CHECKING:
    from xmc.engines.tracking import TrackingParams

DESCRIPTION = """Train the partition-based model (label tree + matcher + per-cluster rankers).

Input: X and Y as npz files (scipy CSR, PECOS naming), or one XC text file (--x only), or a
features bundle from `xmc featurize` (--data BUNDLE: its train split, label names, and its text
vectorizer, which is saved in the model folder so `xmc predict --input` takes raw text).
Parameters: defaults from xmc.params, overridden by --config params.json, overridden by flags.
Example:
  xmc train --x data/bibtex/X.trn.npz --y data/bibtex/Y.trn.npz --model runs/bibtex \\
            --label-names data/bibtex/label_names.txt --max-leaf-size 100 --beam-size 10
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--x", help="features: X.npz, or an XC text file holding X and Y")
    source.add_argument("--data", metavar="BUNDLE", help="features bundle folder written by `xmc featurize`")
    p.add_argument("--y", help="labels: Y.npz (0/1); omit when --x is an XC text file")
    p.add_argument("--model", required=True, help="output model folder (written atomically)")
    p.add_argument("--config", help="JSON params file (as saved in a model's manifest, or flat)")
    p.add_argument("--label-names", help="text file, one label name per line, in column order")
    p.add_argument("--checkpoint-dir", help="save the state after the baseline and every round here")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last finished round saved in --checkpoint-dir")
    p.add_argument("--json", action="store_true",
                   help="print the full training record as JSON instead of the short summary")
    add_param_flags(p)
    from xmc.params import DATA_PLANES, EXECUTORS, ExecutorParams

    add_dataclass_flags(p.add_argument_group("execution (defaults from xmc.params.ExecutorParams)"),
                        ExecutorParams, {"ExecutorKind": EXECUTORS, "DataPlane": DATA_PLANES})
    from xmc.engines.tracking import TrackingParams

    tracking = p.add_argument_group("MLflow tracking: logged while the model trains when any of these is "
                                    "given (defaults from xmc.engines.tracking.TrackingParams)")
    add_dataclass_flags(tracking, TrackingParams)


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from xmc.core.fit import fit
    from xmc.engines.executors import make_executor
    from xmc.io.files import check_target, manifest_format_is
    from xmc.io.model_bundle import FORMAT
    from xmc.io.readers import LabelVocab, load_xy
    from xmc.params import ExecutorParams

    params = params_from_args(args)
    # before any work: a file, or a folder that is not an xmc model, is never replaced by one
    check_target(args.model, folder=True, owned=manifest_format_is(FORMAT), what="an xmc model folder")
    exec_params = dataclass_from_args(ExecutorParams, args)
    sharded = bool(args.data) and exec_params.shards_for_bundle()
    if exec_params.data_plane == "shards" and not args.data:
        from xmc.errors import ParamError

        raise ParamError("--data-plane shards reads a features bundle: give --data BUNDLE (not --x/--y)")
    extra_dirs = None
    n_rows, digest = None, None
    tracking = _tracking_from_args(args)
    if sharded:  # the driver reads footers (and a sample for MLflow); the rows stay in the bundle's parts
        X, Y, names, extra_dirs, n_rows, digest = _bundle_sample(args, SAMPLE_ROWS if tracking else 0)
    elif args.data:
        X, Y, names, extra_dirs = _from_bundle(args)
    else:
        X, Y = load_xy(args.x, args.y)
        names = LabelVocab.load(args.label_names).names if args.label_names else None
        if names is not None and len(names) != Y.shape[1]:
            from xmc.errors import DataFormatError

            raise DataFormatError(f"{len(names)} label names for {Y.shape[1]} label columns",
                                  path=args.label_names)
    where = " (rows stay in the bundle's shards)" if sharded else ""
    print(f"xmc train: {n_rows or X.shape[0]} instances, {X.shape[1]} features, {Y.shape[1]} labels{where}",
          file=sys.stderr)
    if args.resume and not args.checkpoint_dir:
        from xmc.errors import ParamError

        raise ParamError("--resume needs --checkpoint-dir (the folder of the interrupted run)")
    executor = make_executor(exec_params)
    print(f"xmc train: executor: {executor.describe()}", file=sys.stderr)
    live: Any = nullcontext()
    if tracking is not None:  # the MLflow run opens before the fit: rounds are logged as they run
        from xmc.engines.training_run import training_run

        run_params = {"input": str(args.data or args.x), "executor": executor.describe(),
                      "data_plane": "shards" if sharded else "driver"}
        live = training_run(tracking, params, X, Y, run_params, n_rows=n_rows, fingerprint=digest)
    logged: dict[str, Any] = {}
    with live as observer:
        t0 = time.perf_counter()
        if sharded:
            from xmc.core.sharded import fit_sharded

            model = fit_sharded(args.data, params, executor=executor, work_dir=exec_params.work_dir or None,
                                label_names=names, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                                observer=observer)
        else:
            model = fit(X, Y, params, label_names=names, executor=executor,
                        checkpoint_dir=args.checkpoint_dir, resume=args.resume, observer=observer,
                        label_text=_label_text(params, names, extra_dirs))
        fit_s = time.perf_counter() - t0
        model.info["seconds_fit"] = fit_s
        model.info["peak_rss_mib"] = memory_record(executor)
        nodes: dict[str, int] | None = getattr(executor, "node_units", None)  # Ray: units per node
        if nodes:
            model.info["executor_nodes"] = dict(nodes)
        model.save(args.model, extra_dirs=extra_dirs)
        if observer is not None:
            result = observer.finish(model, args.model, fit_seconds=fit_s)
            logged = {"mlflow": {**result.to_dict(), "experiment": tracking.experiment if tracking else ""}}
    record = {"model": args.model, "fit_seconds": round(fit_s, 3),
              "layers": [list(W.shape) for W in model.weights],
              "nnz": [int(W.nnz) for W in model.weights], **model.info, **logged}
    if args.json:
        print_json(record)
    else:
        print(summary(record, model.n_labels, model.label_names is not None))
    return 0


def summary(record: dict[str, Any], n_labels: int, named: bool) -> str:
    """A few lines for a person: held-out quality, rounds, time, where the model and run are."""
    rounds = record.get("rounds") or []
    best = int(record.get("best_round", 0))
    lines = [f"trained in {record['fit_seconds']:.1f} s -> {record['model']}  "
             f"({n_labels} labels{'' if named else ', no label names'})"]
    if rounds:
        kept = rounds[best] if best < len(rounds) else rounds[-1]
        lines.append(f"rounds: baseline + {len(rounds) - 1}, kept round {best} "
                     f"({kept.get('labels_copied', 0)} labels copied into a 2nd cluster or more)")
        val = kept.get("validation")
        if val:
            base = (rounds[0].get("validation") or {}).get("P@1")
            vs = f"  (baseline P@1 {base:.2f})" if base is not None and best else ""
            lines.append("held-out: " + "  ".join(f"P@{k} {val[f'P@{k}']:.2f}" for k in (1, 3, 5)) + vs)
        else:
            lines.append("held-out: none (add --validation-fraction 0.1 to score rounds on held-out rows)")
    pairs = record.get("pairs")
    if pairs:
        lines.append(f"feature pairs: {pairs['why']}")
    trees = record.get("trees") or []
    if trees:
        val = record.get("validation")
        held = f", held-out P@1 {val['P@1']:.2f} (tree 0 alone above)" if val else ""
        lines.append(f"ensemble of {len(trees)} trees, scores averaged{held}")
    ml = record.get("mlflow")
    if ml:
        reg = (f", registered {ml['registered_name']} v{ml['version']}"
               f"{' (champion)' if ml.get('champion_set') else ''}") if ml.get("version") else ""
        lines.append(f"MLflow: run {ml['run_id']} in experiment {ml.get('experiment')!r}{reg}")
        uri, page = ml["tracking_uri"], f"#/experiments/{ml['experiment_id']}/runs/{ml['run_id']}"
        if uri.startswith("http"):
            lines.append(f"  open {uri.rstrip('/')}/{page}")
        else:
            lines.append(f"  mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{page}")
    lines.append(f"full record: {record['model']}/manifest.json, or xmc train --json")
    return "\n".join(lines)


def _tracking_from_args(args: argparse.Namespace) -> TrackingParams | None:
    """TrackingParams when any tracking flag was given (else None: mlflow is never imported)."""
    from dataclasses import fields

    from xmc.engines.tracking import TrackingParams

    if not any(hasattr(args, f.name) for f in fields(TrackingParams)):
        return None
    return dataclass_from_args(TrackingParams, args)


def memory_record(executor: Any) -> dict[str, float]:
    """Peak resident memory of the fit, MiB: the driver (this process), and the largest of the
    executor's workers (Ray tasks; the local executor's units run in the driver)."""
    from xmc.log import peak_rss_mib

    stats: list[dict[str, Any]] = getattr(executor, "stats", [])
    out = {"driver": round(peak_rss_mib(), 1)}
    if stats:
        out["workers"] = max(float(s.get("worker_peak_rss_mib", 0.0)) for s in stats)
    return out


def _label_text(params: Any, names: list[str] | None, extra_dirs: dict[str, str | Path] | None) -> Any:
    """A hybrid's label names as feature rows, through the bundle's vectorizer (None: no vocabulary)."""
    if params.dense.dense == "none" or not extra_dirs or "vectorizer" not in extra_dirs:
        return None
    from xmc.core.dense.fit import label_text_rows
    from xmc.io.vectorizer import TextVectorizer

    return label_text_rows(names, TextVectorizer.load(extra_dirs["vectorizer"]))


def _names(args: argparse.Namespace) -> tuple[list[str] | None, dict[str, str | Path] | None]:
    """A bundle's label names (or --label-names for a bundle of an XC file) and its vectorizer folder."""
    from xmc.errors import ParamError
    from xmc.io.features import load_label_names

    if args.y:
        raise ParamError("--data BUNDLE holds the labels: drop --y")
    names = load_label_names(args.data)
    if names is not None and args.label_names:
        raise ParamError("--data BUNDLE holds its label names (labels.txt): drop --label-names")
    if args.label_names:  # a bundle of an XC file has none: its label ids are the XC file's columns
        from xmc.io.readers import LabelVocab

        names = LabelVocab.load(args.label_names).names
    vectorizer = Path(args.data) / "vectorizer"
    return names, ({"vectorizer": vectorizer} if vectorizer.is_dir() else None)


def _from_bundle(args: argparse.Namespace) -> tuple[Any, Any, list[str] | None, dict[str, str | Path] | None]:
    """X, Y, label names of a featurize bundle's train split, and its vectorizer folder (text input)."""
    from xmc.io.features import load_split

    names, extra = _names(args)
    split = load_split(args.data, "train")
    return split.X, split.Y, names, extra


SAMPLE_ROWS = 10_000
"""Rows the driver reads of a sharded bundle: the MLflow run's held-out metrics and input example."""


def _bundle_sample(args: argparse.Namespace, rows: int) -> tuple[Any, Any, list[str] | None,
                                                                 dict[str, str | Path] | None, int, str]:
    """The first ``rows`` rows of a bundle's train split (0: none, just its shape), its names,
    vectorizer, row count and manifest digest: what the driver of a sharded fit reads of the data."""
    import scipy.sparse as sp

    from xmc.io.features import bundle_digest, load_part, split_parts

    names, extra = _names(args)
    manifest, parts = split_parts(args.data, "train")
    D, L = manifest["n_features"], manifest["n_labels"]
    Xs, Ys = [sp.csr_matrix((0, D), dtype="float32")], [sp.csr_matrix((0, L), dtype="float32")]
    for path, n in parts:
        left = rows - sum(X.shape[0] for X in Xs)
        if left <= 0:
            break
        X, Y = load_part(path, D, L, 0, min(n, left))
        Xs.append(X)
        Ys.append(Y)
    digest = bundle_digest(args.data)
    return (sp.vstack(Xs, format="csr"), sp.vstack(Ys, format="csr"), names, extra,
            sum(n for _, n in parts), digest)


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc train", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
