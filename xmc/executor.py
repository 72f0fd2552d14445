"""Executors run a list of independent work units: one cluster's training, one shard's gains.

A unit function is pure: ``fn(shared, unit) -> result``. ``shared`` is the data every unit reads
(the feature matrix, the layer's targets); an executor may ship it once (the Ray executor puts it
in the object store) instead of once per unit. Results come back in the order of ``units``, so
the same inputs give the same model whichever executor ran them. Results (and ``shared`` inside a unit) may be
read-only arrays (Ray's object store hands out zero-copy views): copy before writing in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from xmc.params import ExecutorParams
from xmc.progress import progress

S = TypeVar("S")
U = TypeVar("U")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn(shared, unit)`` for every unit and returns the results in unit order."""

    def map(
        self, fn: Callable[[S, U], R], shared: S, units: Sequence[U], *, desc: str = ""
    ) -> list[R]: ...

    def describe(self) -> str:
        """One line saying where units run (printed by the jobs)."""
        ...


class LocalExecutor:
    """In-process, one unit after another; torch inside each unit uses the machine's cores."""

    def __init__(self, show_progress: bool = True) -> None:
        self.show_progress = show_progress

    def describe(self) -> str:
        return "local (in-process)"

    def map(
        self, fn: Callable[[S, U], R], shared: S, units: Sequence[U], *, desc: str = ""
    ) -> list[R]:
        return [
            fn(shared, unit)
            for unit in progress(units, desc=desc, total=len(units), enabled=self.show_progress)
        ]


def make_executor(params: ExecutorParams | None = None, *, show_progress: bool = True) -> Executor:
    """The executor ``params`` names (Ray is imported only when asked for)."""
    params = params or ExecutorParams()
    if params.executor == "ray":
        from xmc.ray_executor import RayExecutor

        return RayExecutor(params, show_progress=show_progress)
    return LocalExecutor(show_progress=show_progress)
