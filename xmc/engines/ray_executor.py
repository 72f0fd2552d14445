"""Ray executor: the same work units as the local executor, run as Ray tasks on a cluster.

Why tasks and batches: a unit (one cluster's rankers, one shard's gains) can be tiny, and one
Ray task costs about a millisecond of scheduling, so units are packed into batches of similar
workload (longest-processing-time first: heaviest unit to the lightest batch), a few batches per
worker so a slow worker does not hold the round. ``shared`` (the feature matrix, the targets) is
put in the object store once per ``map``; numpy buffers reach workers without copies. Tasks are
pure and idempotent, so a task whose worker dies is simply run again (``max_retries``), and
results come back in unit order: the same inputs give the same model as the local executor.

Inside a task torch gets ``cpus_per_worker`` threads, or more when a map has fewer batches than
workers (e.g. the root layer's single unit: it runs alone, so its threads take the idle cores),
so workers never oversubscribe cores and a lone heavy unit does not leave the others idle.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from xmc.errors import ParamError, XMCError
from xmc.log import peak_rss_mib, progress_bar
from xmc.params import ExecutorParams

S = TypeVar("S")
U = TypeVar("U")
R = TypeVar("R")


def unit_cost(unit: object) -> float:
    """Workload estimate of a unit: rows x children for a cluster, rows for a shard."""
    n_rows = getattr(unit, "n_rows", None)
    if n_rows is not None:
        return float(n_rows) * max(1, getattr(unit, "n_children", 1))
    start, stop = getattr(unit, "start", None), getattr(unit, "stop", None)
    if start is not None and stop is not None:
        return float(stop - start)
    return 1.0


def balanced_batches(costs: Sequence[float], n_batches: int) -> list[list[int]]:
    """Unit indices split into <= n_batches batches of similar total cost (LPT greedy)."""
    n_batches = max(1, min(n_batches, len(costs)))
    loads = np.zeros(n_batches)
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        b = int(np.argmin(loads))
        batches[b].append(i)
        loads[b] += costs[i]
    return [sorted(b) for b in batches if b]


@dataclass(frozen=True)
class BatchResult:
    indices: list[int]
    results: list[Any]
    seconds: float
    peak_rss_mib: float
    """Peak resident memory of the worker process so far (a bound on this batch's footprint)."""
    pid: int
    node_id: str = ""
    """Ray node the batch ran on (hex id): how work spread over a cluster's machines."""


def _run_batch(fn: Callable[[Any, Any], Any], shared: Any, units: list[Any], indices: list[int],
               threads: int, kill_once: str | None) -> BatchResult:
    """Body of one Ray task: run its units in order with a bounded torch thread pool (when torch is
    used at all: the CPU solver does not load it)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch if a unit loads it later
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if kill_once is not None and not Path(kill_once).exists():  # chaos hook for fault tests
        Path(kill_once).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    import ray

    t0 = time.perf_counter()
    results = [fn(shared, u) for u in units]
    rss = peak_rss_mib()
    return BatchResult(indices, results, time.perf_counter() - t0, rss, os.getpid(),
                       ray.get_runtime_context().get_node_id())


def _result(ref: Any) -> BatchResult:
    """A batch's result; a unit's own error (bad input: file, rows, field) is raised as itself,
    not wrapped in Ray's task traceback, so the CLI prints one clear line."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as e:
        if isinstance(e.cause, XMCError):
            raise e.cause from None
        raise


def _abandon(refs: list[Any], timeout: float = 10.0) -> None:
    """A map failed: cancel its other batches and collect what they left (Ray would otherwise print
    each one's error again as 'unhandled' when the refs are dropped)."""
    import ray

    for ref in refs:
        ray.cancel(ref)
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in ready:
        try:
            ray.get(ref)
        except Exception:  # noqa: S110  their errors are the map's, already being raised
            pass


LOOPBACK = "127.0.0.1"
_SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local Ray starts: its node address is 127.0.0.1, so the GCS, raylet, agents and
    workers listen on loopback only (nothing on ``*`` or ``0.0.0.0``).

    Ray turns a node address of 127.0.0.1 into the machine's routable one unless it runs in
    single-machine mode, which its ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` switch selects (read at
    import, so the constant is set too). The processes started here inherit it; the switch is put
    back afterwards, so a later ``ray.init(address=...)`` of this process joins clusters as usual.
    """
    from ray._private import ray_constants

    saved_env, saved_const = os.environ.get(_SINGLE_NODE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop(_SINGLE_NODE, None)
        else:
            os.environ[_SINGLE_NODE] = saved_env


class RayExecutor:
    """Runs unit batches as Ray tasks; connects to ``address`` or starts a local Ray.

    ``stats`` keeps, per ``map`` call, the batch count, the worker pids that ran them and the
    largest worker peak memory seen, for benchmarks and for the round records. ``node_units``
    counts, over every ``map`` so far, the units each Ray node ran ({node id: units}): whether a
    cluster's nodes all took part, or the scheduler left some idle (``xmc train`` records it in
    the model's ``info["executor_nodes"]``).
    """

    def __init__(self, params: ExecutorParams | None = None, *, show_progress: bool = True,
                 kill_once: str | None = None) -> None:
        import ray

        self.params = params or ExecutorParams(executor="ray")
        self.show_progress = show_progress
        self.kill_once = kill_once
        self.stats: list[dict[str, Any]] = []
        self.node_units: dict[str, int] = {}
        self._started_here = False
        if not ray.is_initialized():
            p = self.params
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if p.ray_address:
                kwargs["address"] = p.ray_address
            elif "RAY_ADDRESS" in os.environ:  # inside `ray job submit`: join the job's cluster
                pass
            else:  # "local" starts a fresh Ray even if a `ray start` cluster runs on this machine
                kwargs["address"] = "local"
                if p.num_workers:
                    kwargs["num_cpus"] = p.num_workers * p.cpus_per_worker
            try:
                if kwargs.get("address") == "local":
                    with _loopback_only():
                        ray.init(**kwargs, _node_ip_address=LOOPBACK)
                else:
                    ray.init(**kwargs)
            except ConnectionError as e:
                raise ParamError(f"cannot reach the Ray cluster at {p.ray_address!r}: {e}") from None
            self._started_here = True
        self._remote = ray.remote(_run_batch)

    def train_dense(self, *args: Any, **kwargs: Any) -> Any:
        """The dense part of a hybrid trained data-parallel on this Ray (``xmc.engines.ray_train``); a
        worker group that dies is restarted from its last epoch up to ``max_retries`` times."""
        from xmc.engines.ray_train import train_prime_ray

        return train_prime_ray(*args, max_failures=self.params.max_retries, **kwargs)

    def describe(self) -> str:
        import ray

        return f"ray cluster at {ray.get_runtime_context().gcs_address}, {self.workers()} workers"

    def workers(self) -> int:
        """Parallel tasks the executor aims for: num_workers, or the cluster's CPUs / cpus_per_worker."""
        import ray

        if self.params.num_workers:
            return self.params.num_workers
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // self.params.cpus_per_worker)

    @staticmethod
    def _node_cpus() -> int:
        """CPUs of the largest live node: a task cannot reserve more than one node has."""
        import ray

        return int(max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1))

    def map(
        self, fn: Callable[[S, U], R], shared: S, units: Sequence[U], *, desc: str = ""
    ) -> list[R]:
        import ray

        if not units:
            return []
        p = self.params
        n_workers = self.workers()
        batches = balanced_batches([unit_cost(u) for u in units], n_workers * p.batches_per_worker)
        shared_ref = ray.put(shared)
        # fewer batches than workers (e.g. the root layer: one unit): give each the idle CPUs
        spare = min(n_workers * p.cpus_per_worker // len(batches), self._node_cpus())
        threads = max(p.cpus_per_worker, spare)
        # Every task asks for cpus_per_worker whatever its thread count: one resource shape, one
        # Ray scheduling class, so warm workers are reused. A map of a single batch asking for 2
        # CPUs made Ray start fresh workers (imports, numba's cache) for the next map of 1-CPU
        # tasks: the sharded fit's one-unit passes made it 30% slower. A map with fewer batches
        # than workers runs alone, so its extra threads take idle cores.
        # SPREAD: batches go to every node of a cluster (Ray's default packs queued tasks onto a
        # node that already has warm workers, leaving others idle); one node: no difference
        options: dict[str, Any] = {"num_cpus": p.cpus_per_worker, "max_retries": p.max_retries,
                                   "retry_exceptions": False, "scheduling_strategy": "SPREAD"}
        if p.memory_per_worker_mb:
            options["memory"] = p.memory_per_worker_mb * 1024 * 1024
        task = self._remote.options(**options)
        pending = {
            task.remote(fn, shared_ref, [units[i] for i in b], b, threads, self.kill_once): len(b)
            for b in batches
        }
        out: list[Any] = [None] * len(units)
        peak, t0 = 0.0, time.perf_counter()
        pids: set[int] = set()
        nodes: dict[str, int] = {}
        with progress_bar(total=len(units), desc=desc, enabled=self.show_progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    try:
                        res: BatchResult = _result(ref)
                    except BaseException:
                        _abandon(list(pending))
                        raise
                    for i, r in zip(res.indices, res.results, strict=True):
                        out[i] = r
                    peak, pids = max(peak, res.peak_rss_mib), pids | {res.pid}
                    nodes[res.node_id] = nodes.get(res.node_id, 0) + len(res.indices)
                    bar.update(pending.pop(ref))
        self.stats.append({"desc": desc, "units": len(units), "batches": len(batches),
                           "workers_used": len(pids), "worker_peak_rss_mib": round(peak, 1),
                           "nodes": nodes, "seconds": round(time.perf_counter() - t0, 3)})
        for node, n in nodes.items():
            self.node_units[node] = self.node_units.get(node, 0) + n
        return out

    def shutdown(self) -> None:
        """Stop the local Ray this executor started (a cluster it joined keeps running)."""
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()
        self._started_here = False
