"""Write a synthetic multi-sense dataset: ``xmc synth --out DIR --n-labels L --train N [--format F]``."""

from __future__ import annotations

import argparse
import sys
import time

from xmc.cli.common import add_dataclass_flags, dataclass_from_args, job_main, print_json

DESCRIPTION = """Generate XMC data with a known ground truth of multi-sense labels (xmc/synth.py).

Labels live in unrelated topics; a share of them has two senses in two topics. Documents are
made block by block from seeded streams (bounded memory, same first n documents whatever n).
--format npz    X/Y/sense .trn/.tst .npz (PECOS naming), for `xmc train --x --y`
--format xc     train.txt / test.txt in XC text format (streamed to disk)
--format jsonl  train.jsonl / test.jsonl raw text records {id, text, labels} (for `xmc featurize`)
Always: spec.json, label_names.txt, truth.npz (topic of each label's senses), README.md.
Example:
  xmc synth --out runs/synth --n-labels 20000 --n-features 50000 --train 50000 --test 10000
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from xmc.research.synth import FORMATS, SynthSpec

    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--train", type=int, default=10000, help="training documents (default: 10000)")
    p.add_argument("--test", type=int, default=2000, help="test documents (default: 2000)")
    p.add_argument("--format", choices=FORMATS, default="npz", help="file format (default: npz)")
    add_dataclass_flags(p.add_argument_group("world (defaults from xmc.research.synth.SynthSpec)"), SynthSpec)


def run(args: argparse.Namespace) -> int:
    from xmc.errors import ParamError
    from xmc.research.synth import SynthSpec, write

    if args.train < 1 or args.test < 0:
        raise ParamError(f"--train must be >= 1 and --test >= 0 (got {args.train}, {args.test})")
    spec = dataclass_from_args(SynthSpec, args)
    t0 = time.perf_counter()
    out = write(spec, args.out, args.train, args.test, args.format)
    print_json({"out": str(out), "format": args.format, "train": args.train, "test": args.test,
                "seconds": round(time.perf_counter() - t0, 2), **spec.__dict__})
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc synth", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
