"""Featurize a labelled corpus with Spark: ``xmc featurize --input train.jsonl --out BUNDLE``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from xmc.cli.common import add_dataclass_flags, job_main, print_json
from xmc.engines.spark.params import INPUT_FORMATS, SPLIT_DIGITS, STEMMERS, STOP_WORDS, FeaturizeParams

DESCRIPTION = """Turn raw labelled text (JSONL or Parquet records {id, text, labels}) or an XC BoW
file into a features bundle: TF-IDF shards per split, the fitted vectorizer, label vocabulary,
frequencies, co-occurrence and PIFA embeddings, and a manifest. Written atomically.

Runs on an embedded local[*] Spark by default; `--master spark://HOST:7077` or
`spark-submit [--properties-file cluster_configs/spark/spark-defaults.conf] jobs/featurize.py ...`
runs it on a cluster. Bad records fail the job with their file, line and field, unless
--skip-bad (then they are counted and reported in the manifest).
Example:
  xmc featurize --input train.jsonl --out runs/bundle --test-fraction 0.1
"""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field (``min_df`` -> ``--min-df``), help and default from the dataclass."""
    group = parser.add_argument_group(
        "featurize parameters (defaults from xmc.engines.spark.params.FeaturizeParams)")
    add_dataclass_flags(group, FeaturizeParams, {"InputFormat": INPUT_FORMATS, "StopWords": STOP_WORDS,
                                                    "Stemmer": STEMMERS, "SplitDigits": SPLIT_DIGITS})


def params_from_args(args: argparse.Namespace) -> FeaturizeParams:
    """Defaults <- ``--config`` JSON <- explicit flags."""
    params = FeaturizeParams.from_json(args.config) if getattr(args, "config", None) else FeaturizeParams()
    names = {f.name for f in fields(FeaturizeParams)}
    return params.replace(**{k: v for k, v in vars(args).items() if k in names})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, nargs="+",
                   help="JSONL / Parquet file(s) or folder(s), or one XC file")
    p.add_argument("--out", required=True, help="output bundle folder (replaced atomically)")
    p.add_argument("--config", help="JSON file of featurize parameters (flat); flags override it")
    p.add_argument("--master", help="Spark master URL (default: spark-submit's, else local[*])")
    p.add_argument("--spark-conf-file", help="spark-defaults.conf style file of Spark settings")
    p.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="one Spark setting (repeatable); overrides --spark-conf-file")
    add_flags(p)


def run(args: argparse.Namespace) -> int:
    from xmc.engines.spark.featurize import check_inputs, featurize
    from xmc.engines.spark.session import parse_conf_pairs, read_conf_file, spark_session

    params = params_from_args(args)
    conf = read_conf_file(args.spark_conf_file) if args.spark_conf_file else {}
    conf.update(parse_conf_pairs(args.spark_conf))
    fmt = check_inputs(args.input, args.out, params)  # before Spark starts: a bad input costs no JVM
    spark, created = spark_session(args.master, conf, app_name="xmc-featurize")
    try:
        manifest = featurize(spark, args.input, args.out, params, checked_format=fmt)
    finally:
        if created:
            spark.stop()
    print_json({"bundle": args.out, "n_features": manifest["n_features"], "n_labels": manifest["n_labels"],
                "splits": manifest["splits"], "bad_records": manifest["bad_records"]["total"],
                "seconds": manifest["seconds"]})
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc featurize", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
