"""Where the per-frame and per-pair tasks of InstanceMap run: in this process (threads), or on a Ray cluster.

Both engines have one method, :meth:`map`: run ``fn(*args, **common)`` for every ``args`` and yield the results in
submission order, with a bounded number of tasks in flight. The caller folds results into the association graph in
that fixed order, so the answer never depends on which task finished first, nor on the engine.

Ray does the distribution, scheduling, retries (a task whose worker dies is run again, ``max_retries``) and transport
(its object store); this module only submits and collects in order. Ray is an optional extra
(``pip install 'instance-nerfacto[ray]'``): ``--ray-address`` without it is one clear error.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from itertools import chain, islice
from multiprocessing import get_context
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import InputError, fail

MAX_RETRIES = 3
"""Times Ray re-runs a task whose worker process died (bad input in a task is raised, never retried)."""


def run_chunk(fn: Callable, chunk: List[tuple], common: Dict[str, Any]) -> List[Any]:
    """One task: ``fn`` over a run of consecutive items (a task per item would cost more to schedule than to run)."""
    return [fn(*a, **common) for a in chunk]


_INSTALLED: Dict[str, Any] = {}
"""A worker process's ``common`` (:meth:`LocalEngine.map` with ``processes``), shipped once when it starts."""


def _install_common(common: Dict[str, Any]) -> None:
    _INSTALLED.clear()
    _INSTALLED.update(common)


def _run_chunk_installed(fn: Callable, chunk: List[tuple]) -> List[Any]:
    return run_chunk(fn, chunk, _INSTALLED)


def chunked(items: Iterable[tuple], size: int) -> Iterator[List[tuple]]:
    chunk: List[tuple] = []
    for a in items:
        chunk.append(a)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class LocalEngine:
    """Tasks on this machine, on ``workers`` threads (OpenCV and numpy on large arrays release the GIL), or on
    ``workers`` worker processes for tasks whose Python and small-array numpy hold the GIL most of the time."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    def map(self, fn: Callable, args: Iterable[tuple], common: Optional[Dict[str, Any]] = None,
            resources: Optional[Dict[str, float]] = None, chunk: int = 1, processes: bool = False) -> Iterator[Any]:
        """``fn(*a, **common)`` for every ``a`` in ``args``, results in submission order. ``processes``: on worker
        processes (started fresh, ``spawn``: the caller's memory is not copied), for GIL-bound tasks, when there are at
        least four tasks per worker; ``fn``, its arguments and results are then pickled, ``common`` once per worker."""
        common = common or {}
        if self.workers == 1:
            for a in args:
                yield fn(*a, **common)
            return
        parts: Iterable[List[tuple]] = chunked(args, chunk)
        if processes:  # worker processes take ~0.3 s each to start: for a few tasks, threads
            head = list(islice(parts, 4 * self.workers))
            processes, parts = len(head) == 4 * self.workers, chain(head, parts)
        if processes:
            pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_install_common,
                                       initargs=(common,))
            submit = partial(pool.submit, _run_chunk_installed, fn)
        else:
            pool = ThreadPoolExecutor(self.workers)
            submit = partial(pool.submit, run_chunk, fn, common=common)
        with pool:
            pending: deque = deque()
            for part in parts:
                pending.append(submit(part))
                if len(pending) >= 2 * self.workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()

    def close(self) -> None:
        pass


class RayEngine:
    """Tasks on a Ray cluster: ``local`` starts one on this machine (``workers`` CPUs), ``auto`` joins the cluster
    started on this machine by ``ray start``, ``ray://HOST:PORT`` connects to a remote head node (Ray Client)."""

    name = "ray"

    def __init__(self, address: str, workers: int = 2) -> None:
        try:
            import ray
        except ImportError:
            fail("--ray-address needs Ray, which is not installed", None,
                 "pip install 'instance-nerfacto[ray]' (or 'ray==2.60.0'), or drop --ray-address to run in one process")
        self.ray = ray
        self.started = False
        _note_slow_imports()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting from a tool that never goes online
        # a busy machine starts Ray's Python agents slowly; the raylet's default wait for them (15 s) then aborts it
        os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
        if address.startswith("ray://"):
            _check_reachable(address)
        tries = 2 if address == "local" else 1  # a local start can miss Ray's fixed 30 s wait on a busy machine
        for attempt in range(tries):
            try:
                if not ray.is_initialized():  # else a caller (a test, a notebook) connected already: use that
                    extra = {"num_cpus": max(1, workers)} if address == "local" else {}
                    ray.init(address=address, **extra, **kwargs)  # "local": always a new cluster, never a running one
                    self.started = True
                break
            except Exception as err:  # Ray raises ConnectionError, RuntimeError, or a bare Exception on a timeout
                ray.shutdown()
                if attempt + 1 < tries:
                    continue
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                fail(f"cannot reach the Ray cluster at '{address}' ({reason[:160]})", None,
                     "start one with `ray start --head` (then --ray-address auto), pass its ray://HOST:10001 "
                     "address, or use --ray-address local")
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.workers = max(1, cpus)
        self._remote: Dict[Callable, Any] = {}

    def _task(self, fn: Callable, resources: Dict[str, float]):
        key = (fn, tuple(sorted(resources.items())))
        if key not in self._remote:
            self._remote[key] = self.ray.remote(fn).options(max_retries=MAX_RETRIES, retry_exceptions=False,
                                                            **resources)
        return self._remote[key]

    def map(self, fn: Callable, args: Iterable[tuple], common: Optional[Dict[str, Any]] = None,
            resources: Optional[Dict[str, float]] = None, chunk: int = 1, processes: bool = True) -> Iterator[Any]:
        """One Ray task per ``chunk`` items (Ray's workers are processes: ``processes`` changes nothing); at most
        two tasks per cluster CPU in flight; results in submission order (``ray.get`` on the oldest), so a slow task
        delays the stream but never reorders it."""
        resources = dict(resources or {"num_cpus": 1})
        if resources.get("num_gpus", 0) > self.gpus:  # no GPU in the cluster: the task would wait forever
            resources = {"num_cpus": 1}
        task = self._task(run_chunk, resources)
        common_ref = self.ray.put(dict(common or {}))  # shipped to the object store once, not once per task
        pending: deque = deque()
        for part in chunked(args, chunk):
            pending.append(task.remote(fn, part, common_ref))
            if len(pending) >= 2 * self.workers:
                yield from self._get(pending.popleft())
        while pending:
            yield from self._get(pending.popleft())

    def _get(self, ref) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, InputError):
                raise InputError(cause.what, cause.path, cause.fix) from None
            raise

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


SLOW_RAY_IMPORTS = {"rfc3987_syntax": "rfc3987-syntax"}
"""Packages that ``import ray`` loads when they are installed and that cost seconds in every Ray process (jsonschema
loads rfc3987-syntax, which builds its grammar at import: 2.8 s of the 3.9 s ``import ray`` on the 2-core machine;
a local cluster starts seven Python processes, ~14 s of its ~24 s start). Nothing in this project uses them."""


def _note_slow_imports() -> None:
    """One line on stderr when a package of SLOW_RAY_IMPORTS is installed (never uninstalled for the user)."""
    import importlib.util

    for module, package in SLOW_RAY_IMPORTS.items():
        if importlib.util.find_spec(module) is not None:
            say(f"instance-map: '{package}' is installed; every Ray process spends ~3 s importing it (through "
                f"jsonschema) and nothing here uses it: `pip uninstall {package}` starts a local cluster ~14 s "
                f"faster on 2 cores", err=True)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after Ray Client's long retry loop, when nothing listens at ray://HOST:PORT."""
    import socket

    host, _, port = address[len("ray://"):].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        fail(f"cannot reach the Ray cluster at '{address}' ({type(err).__name__}: {err})", None,
             "start the head node (`ray start --head`, Ray Client listens on port 10001) or fix the address")


def make_engine(ray_address: Optional[str], workers: int):
    """LocalEngine without an address, RayEngine with one (``local``, ``auto`` or ``ray://HOST:PORT``)."""
    if ray_address is None:
        return LocalEngine(workers)
    if not (ray_address in ("local", "auto") or ray_address.startswith("ray://") or ":" in ray_address):
        fail(f"--ray-address '{ray_address}' is not a Ray address", None, "use local, auto or ray://HOST:PORT")
    return RayEngine(ray_address, workers)
