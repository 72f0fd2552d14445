"""``xmc``: one command, a subcommand per pipeline step (the same code ``jobs/`` runs on clusters).

Only the chosen subcommand's flags are built: building every one of them (params docstrings
parsed, tracking and synth specs imported) was most of the time ``xmc --help`` took."""

from __future__ import annotations

import argparse
import sys

from xmc._version import __version__
from xmc.cli import datasets, evaluate, explain, featurize, nightly, predict, synth, train
from xmc.cli.common import run_main

COMMANDS = {"train": train, "predict": predict, "evaluate": evaluate, "explain": explain,
            "synth": synth, "featurize": featurize, "nightly": nightly, "datasets": datasets}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="xmc",
        description="Extreme multi-label classification with disentangled label clusters.",
        epilog="Run `xmc COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"xmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, job in COMMANDS.items():
        p = sub.add_parser(name, help=job.__doc__.splitlines()[0] if job.__doc__ else name,
                           description=job.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            job.add_arguments(p)
        p.set_defaults(_run=job.run)
    args = parser.parse_args(argv)
    return run_main(args._run, args)


if __name__ == "__main__":
    sys.exit(main())
