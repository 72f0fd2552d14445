"""Predict top-k labels: ``xmc predict --model DIR --x X.tst.npz --topk 5 --out pred.npz``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from xmc.cli.common import check_out_suffix, job_main, positive_int

DESCRIPTION = """Score instances with a trained model by beam search and keep the top-k labels.

--out pred.npz   scipy CSR (N x L, the training label index space) holding each row's top-k scores
--out pred.jsonl one JSON line per instance: {"id": row, "labels": [names...], "scores": [...]},
                 best first (label names from the model's vocabulary, else column indices)
--input docs.jsonl|.parquet  raw text records {id, text} instead of --x: vectorized with the text
                 vectorizer saved in the model (trained with `xmc train --data BUNDLE`); "id" in
                 the output is the record's id
--input docs.parquet --out pred.parquet  batch prediction in bounded memory: rows are read,
                 scored and written --batch-rows at a time; the output {id, labels, scores} is
                 written incrementally to a temp file that replaces --out at the end
--model models:/NAME@champion  a registered model (downloaded from --tracking-uri) instead of a folder
--data BUNDLE --split test --out DIR [--executor ray]  a features bundle's split scored as a map
                 over its shards, the model loaded once per worker: DIR/part-*.parquet
                 {id, labels, scores} and DIR/manifest.json with P@k/PSP@k against the split's labels
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model folder written by `xmc train`, or models:/NAME@ALIAS (or /VERSION)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--x", help="features: X.npz or an XC text file")
    source.add_argument("--input", help="raw text records {id, text[, labels]}: JSONL or Parquet")
    source.add_argument("--data", metavar="BUNDLE", help="a features bundle (from `xmc featurize`): "
                        "its --split is scored shard by shard into the folder --out")
    p.add_argument("--out", required=True,
                   help="pred.npz or pred.jsonl (written atomically); a folder with --data")
    p.add_argument("--split", default="test", help="the bundle split scored with --data (default: test)")
    from xmc.params import EXECUTORS

    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where --data's shards are scored: local threads or Ray tasks (default: local)")
    p.add_argument("--ray-address", default="",
                   help="Ray cluster to join with --executor ray ('' = a local Ray)")
    p.add_argument("--topk", type=positive_int, default=None,
                   help="labels per instance, >= 1 (default: model's topk)")
    p.add_argument("--beam-size", type=positive_int, default=None,
                   help="beam width, >= 1 (default: model's beam_size)")
    from xmc.core.model import COMPONENTS

    p.add_argument("--components", choices=COMPONENTS, default="all",
                   help="score with the whole model (all), or one part of a hybrid: the trees alone (tree) "
                        "or the dense part alone (dense) (default: all)")
    from xmc.ops.batch import DEFAULT_BATCH_ROWS

    p.add_argument("--batch-rows", type=positive_int, default=DEFAULT_BATCH_ROWS,
                   help=f"rows per batch for parquet -> parquet (default: {DEFAULT_BATCH_ROWS})")
    p.add_argument("--tracking-uri", default="",
                   help="MLflow store of a models:/ --model ('' = MLFLOW_TRACKING_URI, else ./mlflow.db)")


def run(args: argparse.Namespace) -> int:
    from xmc.ops.batch import is_registry_uri

    if not args.data:
        _check_args(args)
    if not is_registry_uri(args.model):
        return _run(args)
    import tempfile

    from xmc.ops.batch import resolve_model

    with tempfile.TemporaryDirectory(prefix="xmc-model-") as tmp:
        args.model = str(resolve_model(args.model, tmp, args.tracking_uri))
        return _run(args)


def _check_args(args: argparse.Namespace) -> None:
    """Refuse what we would not honour before any work: the output's format, an output that is
    a folder or one of the inputs."""
    from pathlib import Path

    from xmc.errors import ParamError

    parquet_in = bool(args.input) and args.input.endswith(".parquet")
    check_out_suffix("--out", args.out, (".npz", ".jsonl", ".parquet") if parquet_in else (".npz", ".jsonl"))
    out = Path(args.out)
    if out.is_dir():
        raise ParamError(f"--out {args.out!r} is a folder; give a file name")
    for flag, src in (("--x", args.x), ("--input", args.input)):
        if src and out.exists() and Path(src).exists() and out.samefile(src):
            raise ParamError(f"--out {args.out!r} is the {flag} input: it would be overwritten")


def _run(args: argparse.Namespace) -> int:
    from xmc.core.executor import LocalExecutor  # every core, as PECOS, omikuji and napkinXC predict
    from xmc.core.model import XMCModel
    from xmc.core.sparse import topk_rows
    from xmc.io.readers import load_features, write_jsonl, write_npz

    if args.data:
        return _run_bundle(args)
    if args.input and args.input.endswith(".parquet") and args.out.endswith(".parquet"):
        from xmc.ops.batch import predict_parquet

        model_topk = XMCModel.load(args.model).params.predict.topk if args.topk is None else args.topk
        report = predict_parquet(args.model, args.input, args.out, topk=model_topk,
                                 batch_rows=args.batch_rows, beam_size=args.beam_size,
                                 components=args.components, executor=LocalExecutor(show_progress=False))
        print(f"xmc predict: {report.rows} instances in {report.batches} batches, {report.seconds:.2f}s "
              f"-> {args.out}", file=sys.stderr)
        return 0
    model = XMCModel.load(args.model)
    ids: list[str] | None = None
    t0 = time.perf_counter()
    if args.input:
        from xmc.io.readers import read_records

        records = read_records(args.input, require_labels=False)
        ids = [rec.id for rec in records]
        pred = model.predict_texts([rec.text for rec in records], topk=args.topk, beam_size=args.beam_size,
                                   components=args.components, executor=LocalExecutor())
    else:
        pred = model.predict(load_features(args.x), topk=args.topk, beam_size=args.beam_size,
                             components=args.components, executor=LocalExecutor())
    seconds = time.perf_counter() - t0
    if args.out.endswith(".jsonl"):
        k = min(args.topk or model.params.predict.topk, model.n_labels)
        idx, vals = topk_rows(pred, k)
        names = model.label_names

        def rows() -> Iterator[dict[str, object]]:
            for i in range(idx.shape[0]):
                keep = idx[i] >= 0
                labels = [names[j] if names else int(j) for j in idx[i][keep]]
                doc_id = ids[i] if ids is not None else i
                yield {"id": doc_id, "labels": labels, "scores": [round(float(v), 6) for v in vals[i][keep]]}

        write_jsonl(args.out, rows())
    else:
        write_npz(args.out, pred)
    print(f"xmc predict: {pred.shape[0]} instances in {seconds:.2f}s "
          f"({pred.shape[0] / max(seconds, 1e-9):.0f}/s) -> {args.out}", file=sys.stderr)
    return 0


def _run_bundle(args: argparse.Namespace) -> int:
    """A bundle split scored as a distributed map over its shards (``xmc.ops.shard_predict``)."""
    from xmc.engines.executors import make_executor
    from xmc.ops.shard_predict import predict_bundle
    from xmc.params import ExecutorParams

    executor = make_executor(ExecutorParams(executor=args.executor, ray_address=args.ray_address))
    report = predict_bundle(args.model, args.data, args.split, args.out, executor, topk=args.topk,
                            beam_size=args.beam_size, components=args.components)
    metrics = report["metrics"]
    scored = "  ".join(f"{k} {metrics[k]:.2f}" for k in ("P@1", "P@3", "P@5")) if metrics else "no labels"
    print(f"xmc predict: {report['rows']} instances in {report['seconds']:.2f}s on {executor.describe()} "
          f"-> {args.out}  ({scored})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc predict", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
