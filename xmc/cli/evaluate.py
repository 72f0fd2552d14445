"""Evaluate predictions: ``xmc evaluate --y Y.tst.npz --pred pred.npz`` prints metrics as JSON."""

from __future__ import annotations

import argparse
import sys

from xmc.cli.common import job_main, print_json

DESCRIPTION = """Compute P@k, R@k, nDCG@k and PSP@k (percent) of a prediction matrix.

PSP@k needs training label frequencies for the propensities: from --model (saved at training)
or --y-train. Without either, PSP@k is omitted.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--y", required=True, help="true labels: Y.npz or an XC text file")
    p.add_argument("--pred", required=True, help="predictions: pred.npz written by `xmc predict`")
    p.add_argument("--k", default="1,3,5", help="comma-separated cut-offs (default: 1,3,5)")
    p.add_argument("--model", help="model folder: training label counts for PSP@k")
    p.add_argument("--y-train", help="training labels (npz or XC text): counts for PSP@k")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from xmc.core.metrics import evaluate
    from xmc.errors import DataFormatError, ParamError
    from xmc.io.readers import load_labels, read_npz

    try:
        ks = [int(k) for k in args.k.split(",")]
    except ValueError:
        raise ParamError(f"--k {args.k!r} must be comma-separated integers >= 1") from None
    if not ks or min(ks) < 1:
        raise ParamError(f"--k {args.k!r} must be comma-separated integers >= 1")
    Y = load_labels(args.y)
    pred = read_npz(args.pred)
    if pred.shape != Y.shape:
        raise DataFormatError(f"predictions are {_shape(pred)} but labels are {_shape(Y)}", path=args.pred)
    counts, n_train = None, None
    if args.model:
        from xmc.core.model import XMCModel

        model = XMCModel.load(args.model)
        counts, n_train = model.label_counts, model.n_train
    elif args.y_train:
        Yt = load_labels(args.y_train)
        counts, n_train = np.asarray(Yt.sum(axis=0)).ravel(), Yt.shape[0]
    print_json({k: round(v, 4) for k, v in evaluate(Y, pred, ks, label_counts=counts,
                                                      n_train=n_train).items()})
    return 0


def _shape(M: object) -> str:
    rows, cols = M.shape  # type: ignore[attr-defined]
    return f"{int(rows)} x {int(cols)}"


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc evaluate", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
