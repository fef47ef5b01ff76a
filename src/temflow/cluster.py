"""The one place temflow creates a ``distributed.Client``.

By default a ``LocalCluster`` sized to the machine and bound to loopback only
(Dask has no authentication: a scheduler or dashboard reachable from the
network lets anyone run code as you). An existing cluster is used by address;
a remote one should be reached over TLS (``tls://`` addresses with
certificates).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # distributed is imported lazily: importing temflow must not start anything
    from distributed import Client

__all__ = ["connect", "dashboard_link", "worker_threads"]

#: What a nanny writes into *this* process's environment before spawning a worker
#: (``distributed.nanny.pre-spawn-environ``): torch, imported later here, would read them
_SPAWN_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")


@contextmanager
def _own_environment() -> Iterator[None]:
    """Give this process back the environment it had before the nannies spawned their workers.

    A nanny sets ``OMP_NUM_THREADS=1`` (and the MKL/OpenBLAS equivalents) in the
    process that starts the cluster, so that the worker it spawns inherits it.
    Left there, torch imported afterwards in this process (training without a
    client) would run on one thread, and a run with a ``LocalCluster`` would
    train differently from the same run against ``--scheduler``. The workers
    keep the setting: they are spawned before the environment is restored.
    """
    saved = {name: os.environ.get(name) for name in _SPAWN_VARIABLES}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _default_workers() -> tuple[int, int]:
    cores = os.cpu_count() or 1
    # torch and FFTs scale well over a few threads; too many workers multiply memory
    workers = max(1, min(cores, 4) if cores < 8 else cores // 4)
    return workers, max(1, cores // workers)


def worker_threads() -> int:
    """Threads each task may use inside a worker (for torch / FFT libraries).

    Inside a dask worker: the worker's thread budget divided by its task
    threads, at least 1; outside: the machine's cores.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return os.cpu_count() or 1
    cores = int(os.environ.get("TEMFLOW_WORKER_CORES", worker.state.nthreads))
    return max(1, cores // max(worker.state.nthreads, 1))


@contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float = "auto",
    dashboard_address: str = "127.0.0.1:8787",
    processes: bool = True,
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Iterator["Client"]:
    """Connect to a Dask cluster for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786`` or ``tls://...``);
        default: start a ``LocalCluster`` on this machine, bound to 127.0.0.1.
    n_workers, threads_per_worker : int, optional
        Size of the local cluster; default: sized to this machine's cores.
    memory_limit : str or float
        Memory limit per local worker (``"4GiB"``, bytes, or ``"auto"``).
    dashboard_address : str
        Where the local dashboard listens; loopback by default. ``":0"`` picks
        a free port on all interfaces — avoid it outside a trusted network.
    processes : bool
        Local workers as processes (default) or threads.
    tls_ca_file, tls_cert, tls_key : str, optional
        TLS files for a ``tls://`` scheduler.

    Yields
    ------
    distributed.Client
        Set as the default scheduler inside the block; closed (with the local
        cluster, if one was started) at its end. This process's thread
        settings (``OMP_NUM_THREADS`` and the like) are left as they were:
        the local workers get one BLAS thread each, this process keeps its own,
        so torch in this process uses the cores it would use without a cluster.

    Raises
    ------
    ValueError
        For inconsistent arguments (TLS files without a ``tls://`` address,
        non-positive worker counts).
    """
    from distributed import Client, LocalCluster
    from distributed.security import Security

    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be at least 1; got {n_workers}")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be at least 1; got {threads_per_worker}")
    tls = [tls_ca_file, tls_cert, tls_key]
    security = None
    if any(tls):
        if not all(tls):
            raise ValueError("TLS needs all of tls_ca_file, tls_cert and tls_key")
        for name, path in zip(("tls_ca_file", "tls_cert", "tls_key"), tls):
            if not os.path.isfile(str(path)):
                raise ValueError(f"{name} {path!r} does not exist")
        if scheduler is not None and not scheduler.startswith("tls://"):
            raise ValueError(f"TLS files were given but the scheduler address {scheduler!r} is not tls://")
        security = Security(
            tls_ca_file=tls_ca_file, tls_client_cert=tls_cert, tls_client_key=tls_key, require_encryption=True
        )
    if scheduler:
        client = Client(scheduler, security=security, set_as_default=True)
        try:
            yield client
        finally:
            client.close()
        return
    default_workers, default_threads = _default_workers()
    workers = n_workers or default_workers
    threads = threads_per_worker or (max(1, (os.cpu_count() or 1) // workers) if n_workers else default_threads)
    # worker processes talk over TCP on loopback; threaded workers share this process
    network = {"host": "127.0.0.1"} if processes else {}
    with _own_environment():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
            silence_logs=40,
            **network,
        )
    client = Client(cluster, set_as_default=True)
    try:
        # a worker restarted by its nanny (after running out of memory) sets the variables again:
        # restore them when the block ends too
        with _own_environment():
            yield client
    finally:
        client.close()
        cluster.close()


def dashboard_link(client: Any) -> str | None:
    """The dashboard's URL, or None when the cluster has no dashboard."""
    try:
        return str(client.dashboard_link)
    except (AttributeError, KeyError):
        return None
