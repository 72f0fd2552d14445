"""Featurize a corpus with Spark (`spark-submit jobs/featurize.py ...`).

A thin entry point for `spark-submit`; the command is ``xmc featurize`` (xmc.cli.featurize).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmc.cli.featurize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
