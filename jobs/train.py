"""Train an XMC model: ``xmc train --x X.trn.npz --y Y.trn.npz --model DIR [--PARAM VALUE ...]``."""

from __future__ import annotations

import argparse
import sys
import time

from xmc.cliutil import add_param_flags, job_main, params_from_args, print_json

DESCRIPTION = """Train the partition-based model (label tree + matcher + per-cluster rankers).

Input: X and Y as npz files (scipy CSR, PECOS naming), or one XC text file (--x only).
Parameters: defaults from xmc.params, overridden by --config params.json, overridden by flags.
Example:
  xmc train --x data/bibtex/X.trn.npz --y data/bibtex/Y.trn.npz --model runs/bibtex \\
            --label-names data/bibtex/label_names.txt --max-leaf-size 100 --beam-size 10
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--x", required=True, help="features: X.npz, or an XC text file holding X and Y")
    p.add_argument("--y", help="labels: Y.npz (0/1); omit when --x is an XC text file")
    p.add_argument("--model", required=True, help="output model folder (written atomically)")
    p.add_argument("--config", help="JSON params file (as saved in a model's manifest, or flat)")
    p.add_argument("--label-names", help="text file, one label name per line, in column order")
    add_param_flags(p)


def run(args: argparse.Namespace) -> int:
    from xmc.data import LabelVocab, load_xy
    from xmc.model import XMCModel

    params = params_from_args(args)
    X, Y = load_xy(args.x, args.y)
    names = LabelVocab.load(args.label_names).names if args.label_names else None
    print(f"xmc train: {X.shape[0]} instances, {X.shape[1]} features, {Y.shape[1]} labels",
          file=sys.stderr)
    t0 = time.perf_counter()
    model = XMCModel.fit(X, Y, params, label_names=names)
    fit_s = time.perf_counter() - t0
    model.save(args.model)
    print_json({"model": args.model, "fit_seconds": round(fit_s, 3),
                "layers": [list(W.shape) for W in model.weights],
                "nnz": [int(W.nnz) for W in model.weights], **model.info})
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc train", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
