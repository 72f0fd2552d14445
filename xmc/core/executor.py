"""Executors run a list of independent work units: one cluster's training, one shard's gains.

A unit function is pure: ``fn(shared, unit) -> result``. ``shared`` is the data every unit reads
(the feature matrix, the layer's targets); an executor may ship it once (the Ray executor puts it
in the object store) instead of once per unit. Results come back in the order of ``units``, so
the same inputs give the same model whichever executor ran them. Results (and ``shared`` inside a unit) may be
read-only arrays (Ray's object store hands out zero-copy views): copy before writing in place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Protocol, TypeVar

from xmc.log import progress

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


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, then put back; nothing when torch is not
    loaded (the CPU solver does not use it, and loading it would cost ~250 MiB)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LocalExecutor:
    """In-process: units run on a pool of threads, one core each.

    torch's intra-op threads barely parallelise one unit's sparse products, but the kernels
    release the GIL, so units side by side on single-threaded torch use every core (2 cores,
    10K labels x 100K docs: fit 11.6 s one unit at a time on 2 torch threads, 8.3 s here).
    Results are the same as one unit after another: a unit reads only its inputs, and its
    single-threaded kernels sum in a fixed order.
    """

    def __init__(self, show_progress: bool = True, threads: int = 0) -> None:
        self.show_progress = show_progress
        self.threads = threads or os.cpu_count() or 1
        """Units run at once (0 = one per CPU)."""

    def describe(self) -> str:
        return f"local (in-process, {self.threads} thread{'s' if self.threads > 1 else ''})"

    def map(
        self, fn: Callable[[S, U], R], shared: S, units: Sequence[U], *, desc: str = ""
    ) -> list[R]:
        if self.threads == 1 or len(units) <= 1:  # one unit keeps all of torch's threads
            return [fn(shared, u) for u in progress(units, desc=desc, total=len(units),
                                                    enabled=self.show_progress)]
        with torch_threads(1), ThreadPoolExecutor(self.threads) as pool:
            return list(progress(pool.map(partial(fn, shared), units), desc=desc, total=len(units),
                                 enabled=self.show_progress))
