"""Executors run a list of independent work units: one cluster's training, one shard's gains.

A unit function is pure: ``fn(shared, unit) -> result``. ``shared`` is the data every unit reads
(the feature matrix, the layer's targets); an executor may ship it once (the Ray executor puts it
in the object store) instead of once per unit. Results come back in the order of ``units``, so
the same inputs give the same model whichever executor ran them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from xmc.progress import progress

S = TypeVar("S")
U = TypeVar("U")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn(shared, unit)`` for every unit and returns the results in unit order."""

    def map(
        self, fn: Callable[[S, U], R], shared: S, units: Sequence[U], *, desc: str = ""
    ) -> list[R]: ...


class LocalExecutor:
    """In-process, one unit after another; torch inside each unit uses the machine's cores."""

    def __init__(self, show_progress: bool = True) -> None:
        self.show_progress = show_progress

    def map(
        self, fn: Callable[[S, U], R], shared: S, units: Sequence[U], *, desc: str = ""
    ) -> list[R]:
        return [
            fn(shared, unit)
            for unit in progress(units, desc=desc, total=len(units), enabled=self.show_progress)
        ]
