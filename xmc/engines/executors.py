"""The executor a run asks for: in-process threads (``xmc.core.executor``) or Ray tasks."""

from __future__ import annotations

from xmc.core.executor import Executor, LocalExecutor
from xmc.params import ExecutorParams


def make_executor(params: ExecutorParams | None = None, *, show_progress: bool = True) -> Executor:
    """The executor ``params`` names (Ray is imported only when asked for)."""
    params = params or ExecutorParams()
    if params.executor == "ray":
        from xmc.engines.ray_executor import RayExecutor

        return RayExecutor(params, show_progress=show_progress)
    return LocalExecutor(show_progress=show_progress, threads=params.num_workers)
