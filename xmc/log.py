"""What a run says about itself: log lines, progress bars on long work, and its peak memory.

Modules log to ``logging.getLogger("xmc.<step>")``; the CLI shows INFO and above on stderr as
``xmc <step>: message`` (``setup_cli_logging``), a library user configures logging as they like.
Progress bars are tqdm on a terminal, quiet in tests and pipes unless forced.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class _StepFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.name.replace('.', ' ')}: {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is then: a notebook or a test that swaps the stream
    after the handler was made (pytest's capsys, one per test) still gets the lines."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it; the property wins
        pass


def setup_cli_logging(level: int = logging.INFO) -> None:
    """Send the ``xmc`` loggers to stderr as ``xmc <step>: message`` (once per process)."""
    root = logging.getLogger("xmc")
    if not any(getattr(h, "_xmc_cli", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_StepFormatter())
        handler._xmc_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def progress_enabled() -> bool:
    """Bars show on an interactive stderr, or always with XMC_PROGRESS=1; XMC_PROGRESS=0 hides them."""
    flag = os.environ.get("XMC_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "")
    return sys.stderr.isatty()


def progress(
    items: Iterable[T], *, desc: str, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """Wrap an iterable in a progress bar (units done / total, rate) when bars are enabled."""
    if not (enabled and progress_enabled()):
        yield from items
        return
    from tqdm import tqdm  # here, not at import: `xmc --help` stays fast

    yield from tqdm(items, desc=desc, total=total, unit="unit", leave=False, dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def progress_bar(*, total: int, desc: str, unit: str = "unit", enabled: bool = True) -> Iterator[Any]:
    """A bar to ``update(n)`` by hand (work finishing out of order, e.g. remote batches)."""
    if not (enabled and progress_enabled()):
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield bar


def crash_log_dir() -> Path:
    """Where full tracebacks of unexpected errors go: ``$XMC_LOG_DIR``, else ``<tmp>/xmc-logs``."""
    import tempfile

    return Path(os.environ.get("XMC_LOG_DIR") or Path(tempfile.gettempdir()) / "xmc-logs")


def write_crash_log(exc: BaseException, argv: list[str] | None = None) -> Path | None:
    """Write the full traceback of ``exc`` (with the command line and versions) to a new file in
    ``crash_log_dir()``; returns its path, or None when it cannot be written."""
    import datetime as dt
    import traceback

    from xmc._version import __version__

    try:
        folder = crash_log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"xmc-{stamp}-{os.getpid()}.log"
        text = (f"xmc {__version__}, python {sys.version.split()[0]}\n"
                f"argv: {argv if argv is not None else sys.argv}\n\n"
                + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        path.write_text(text, encoding="utf-8")
        return path
    except OSError:
        return None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (a Java stack or a long repr cut), for a one-line summary."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > limit:
        first = first[:limit] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
