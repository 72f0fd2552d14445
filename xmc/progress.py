"""Progress bars on long work: tqdm on a terminal, quiet in tests and pipes unless forced."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


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
    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield bar
