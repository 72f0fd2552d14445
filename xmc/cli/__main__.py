"""``python -m xmc.cli``: the same as the ``xmc`` command."""

import sys

from xmc.cli import main

sys.exit(main())
