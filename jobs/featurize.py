"""Featurize a labelled corpus with Spark: ``xmc featurize --input train.jsonl --out BUNDLE``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `spark-submit jobs/featurize.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmc.cliutil import job_main, print_json  # noqa: E402
from xmc.spark.params import add_flags, params_from_args  # noqa: E402

DESCRIPTION = """Turn raw labelled text (JSONL or Parquet records {id, text, labels}) or an XC BoW
file into a features bundle: TF-IDF shards per split, the fitted vectorizer, label vocabulary,
frequencies, co-occurrence and PIFA embeddings, and a manifest. Written atomically.

Runs on an embedded local[*] Spark by default; `--master spark://HOST:7077` or
`spark-submit [--properties-file cluster_configs/spark/spark-defaults.conf] jobs/featurize.py ...`
runs it on a cluster. Bad records fail the job with their file, line and field, unless
--skip-bad (then they are counted and reported in the manifest).
Example:
  xmc featurize --input train.jsonl --out runs/bundle --min-df 2 --ngram-max 2 --test-fraction 0.1
"""


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
    from xmc.spark.featurize import featurize
    from xmc.spark.session import parse_conf_pairs, read_conf_file, spark_session

    params = params_from_args(args)
    conf = read_conf_file(args.spark_conf_file) if args.spark_conf_file else {}
    conf.update(parse_conf_pairs(args.spark_conf))
    spark, created = spark_session(args.master, conf, app_name="xmc-featurize")
    try:
        manifest = featurize(spark, args.input, args.out, params)
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
