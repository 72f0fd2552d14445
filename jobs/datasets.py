"""List or fetch standard XMC benchmark data sets.

A thin entry point for `spark-submit` / `ray job submit`; the command is ``xmc datasets`` (xmc.cli.datasets).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmc.cli.datasets import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
