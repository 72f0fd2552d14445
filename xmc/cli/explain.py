"""Explain a label: ``xmc explain --model DIR --x X.trn.npz --y Y.trn.npz --label NAME``."""

from __future__ import annotations

import argparse
import sys

from xmc.cli.common import job_main, print_json

DESCRIPTION = """List a label's clusters with their precision gains and the top features of the
training instances the matcher routes to each copy (how "apple" the fruit and "Apple" the brand
show up as two copies). --label takes a name from the model's vocabulary or a column index.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder written by `xmc train`")
    p.add_argument("--x", required=True, help="training features (npz or XC text)")
    p.add_argument("--y", help="training labels (npz); omit when --x is an XC text file")
    p.add_argument("--label", required=True, help="label name or column index")
    p.add_argument("--feature-names", help="text file, one feature name per line")
    p.add_argument("--top", type=int, default=10, help="features per copy (default: 10)")


def run(args: argparse.Namespace) -> int:
    from xmc.core.model import XMCModel
    from xmc.errors import DataFormatError
    from xmc.io.readers import LabelVocab, load_xy
    from xmc.research.explain import explain_label

    model = XMCModel.load(args.model)
    X, Y = load_xy(args.x, args.y)
    if model.label_names and args.label in model.label_names:
        label = model.label_names.index(args.label)
    elif args.label.isdigit():
        label = int(args.label)
    else:
        raise DataFormatError(f"--label {args.label!r} is neither a label name of the model nor an index")
    if not 0 <= label < model.n_labels:
        raise DataFormatError(f"--label {label} out of range [0, {model.n_labels})")
    names = LabelVocab.load(args.feature_names).names if args.feature_names else None
    print_json(explain_label(model, X, Y, label, names, args.top))
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc explain", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
