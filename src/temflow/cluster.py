"""The one place temflow creates a ``distributed.Client``.

By default a ``LocalCluster`` sized to the machine and bound to loopback only
(Dask has no authentication: a scheduler or dashboard reachable from the
network lets anyone run code as you). An existing cluster is used by address;
a remote one should be reached over TLS (``tls://`` addresses with
certificates).
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import ExitStack, contextmanager
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # distributed is imported lazily: importing temflow must not start anything
    from distributed import Client

__all__ = ["connect", "dashboard_link", "worker_threads", "check_scheduler"]

_NO_AUTH = ("Dask has no authentication: anyone who can reach it can run code as you. Keep it on "
            "127.0.0.1, or use a tls:// scheduler with certificates (tls_ca_file, tls_cert, tls_key)")


def _split_address(address: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``"tcp://host:port"``, ``"host:port"`` or ``":port"``."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if not _:  # no port
        host, port = rest, ""
    return scheme or "tcp", host.strip("[]"), int(port) if port.isdigit() else None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_scheduler(address: str, *, timeout_s: float = 5.0, ssl_context: Any = None) -> None:
    """Refuse a scheduler address that does not answer within ``timeout_s``.

    ``distributed.Client`` waits 30 s on an unreachable address and ends in a
    traceback, and waits forever on a peer that accepts the connection (and,
    for ``tls://``, the TLS handshake) but never speaks. This opens one
    connection first, does the TLS handshake for ``tls://``, and waits for the
    first byte a Dask scheduler sends (it speaks first); every step has
    ``timeout_s``.

    Parameters
    ----------
    address : str
        ``tcp://host:port`` or ``tls://host:port`` (``host:port`` means tcp).
    timeout_s : float
        How long each step (connection, TLS handshake, first byte) may take, s.
    ssl_context : ssl.SSLContext, optional
        The client's TLS context for a ``tls://`` address (the one
        ``distributed`` will use); default: a context that checks nothing,
        enough to see whether the peer answers a TLS handshake at all.

    Raises
    ------
    ValueError
        If the address has no port, nothing answers there in time, the TLS
        handshake fails or times out, or what answers does not speak first as
        a Dask scheduler does.

    Examples
    --------
    >>> check_scheduler("tcp://127.0.0.1")
    Traceback (most recent call last):
    ...
    ValueError: the scheduler address must look like 'tcp://host:port' or 'tls://host:port'; got 'tcp://127.0.0.1'
    """
    import socket
    import ssl

    scheme, host, port = _split_address(address)
    if scheme not in ("tcp", "tls") or port is None or not host or not 0 < port < 65536:
        raise ValueError(f"the scheduler address must look like 'tcp://host:port' or 'tls://host:port'; got {address!r}")
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds; got {timeout_s!r}")
    silent = (f"something at {address!r} accepts connections but sends nothing within {timeout_s:g} s: it is "
              "not a Dask scheduler (or one too busy to answer); check the address and port, or allow more time "
              "(connect(timeout_s=...), [cluster] connect_timeout_s)")
    try:
        with ExitStack() as stack:
            raw = stack.enter_context(socket.create_connection((host, port), timeout=timeout_s))
            raw.settimeout(timeout_s)
            probe: socket.socket = raw
            if scheme == "tls":
                if ssl_context is None:
                    ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ssl_context.check_hostname = False
                    ssl_context.verify_mode = ssl.CERT_NONE
                # the client speaks first in TLS: a peer that never answers the hello hangs here
                secure = stack.enter_context(ssl_context.wrap_socket(raw, server_hostname=host,
                                                                     do_handshake_on_connect=False))
                probe = secure
                try:
                    secure.do_handshake()
                except socket.timeout:
                    raise ValueError(f"something at {address!r} accepts connections but does not answer the TLS "
                                     f"handshake within {timeout_s:g} s: it is not a TLS Dask scheduler; check the "
                                     "address and port (tcp:// for a scheduler without TLS)") from None
                except ssl.SSLError as exc:
                    raise ValueError(f"the TLS handshake with {address!r} failed ({exc.reason or exc}); check "
                                     "tls_ca_file, tls_cert and tls_key, and that the scheduler uses TLS (else "
                                     "tcp://)") from None
            # a Dask scheduler speaks first (its handshake); distributed.Client waits forever on a peer
            # that accepts (over TLS: completes the handshake) and stays silent, whatever its timeout says
            try:
                first = probe.recv(1)
            except socket.timeout:
                raise ValueError(silent + ("" if scheme == "tls" else "; a TLS scheduler needs tls://")) from None
            except ssl.SSLError as exc:  # e.g. the scheduler refused our certificate after the handshake
                raise ValueError(f"the scheduler at {address!r} closed the TLS connection ({exc.reason or exc}); "
                                 "check tls_cert and tls_key against the scheduler's CA") from None
            if not first:
                raise ValueError(f"something at {address!r} accepts connections and closes them at once: it is "
                                 "not a Dask scheduler (or it refused this client's certificate); check the port")
    except socket.timeout:
        raise ValueError(f"cannot reach the Dask scheduler at {address!r}: no answer within {timeout_s:g} s; check "
                         "the address and that a firewall lets the port through") from None
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise ValueError(f"the TLS connection to {address!r} failed ({exc.reason or exc}); check the TLS files "
                             "and tls:// versus tcp://") from None
        raise ValueError(f"cannot reach the Dask scheduler at {address!r} ({exc.strerror or exc}); check the address "
                         "and that the scheduler is running there") from None


#: Settings of temflow's local workers (see connect)
_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}

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
    timeout_s: float = 5.0,
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
        Where the local dashboard listens, ``"host:port"``; ``":port"`` (``":0"``:
        a free port) stays on loopback. Any other host than loopback (such as
        ``"0.0.0.0:8787"``, all interfaces) exposes the cluster: it is honoured, with a warning.
    processes : bool
        Local workers as processes (default) or threads; either way every worker
        socket and HTTP server listens on loopback only.
    tls_ca_file, tls_cert, tls_key : str, optional
        TLS files for a ``tls://`` scheduler.
    timeout_s : float
        How long an existing scheduler may take to answer each step of the
        connection (TCP, TLS handshake, its first message), s; a peer that
        accepts and stays silent is refused after it.

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
        non-positive worker counts, a ``tls://`` address without TLS
        settings), a scheduler that does not answer within ``timeout_s``
        (:func:`check_scheduler`), or an address where something other than a
        Dask scheduler answers.

    Warns
    -----
    UserWarning
        When a dashboard or an unencrypted (``tcp://``) scheduler is off loopback.
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
        scheme, host, _ = _split_address(scheduler)
        if security is None and scheme == "tls":
            security = Security()  # the TLS files of dask's configuration (distributed.comm.tls), if any
        ssl_context = security.get_connection_args("client").get("ssl_context") if security is not None else None
        if scheme == "tls" and ssl_context is None:
            raise ValueError(f"the scheduler address {scheduler!r} is tls:// but no TLS files were given: pass "
                             "tls_ca_file, tls_cert and tls_key ([cluster] in a run file)")
        check_scheduler(scheduler, timeout_s=timeout_s, ssl_context=ssl_context)
        if scheme == "tcp" and not _is_loopback(host):
            warnings.warn(f"the scheduler {scheduler!r} is reached without TLS: traffic is unencrypted and "
                          f"{_NO_AUTH}", UserWarning, stacklevel=3)
        try:
            client = Client(scheduler, security=security, set_as_default=True, timeout=f"{max(10.0, 2 * timeout_s):g}s")
        except Exception as exc:  # noqa: BLE001 - whatever answers there may send anything back
            # something that is not a Dask scheduler (a proxy, a web server) can make distributed
            # read a garbage frame length and ask for exabytes: the allocation fails, nothing is held
            raise ValueError(f"cannot connect to a Dask scheduler at {scheduler!r}: something answers there but the "
                             f"Dask handshake failed ({type(exc).__name__}: {str(exc)[:200]}); check the address and "
                             "port, and tls:// versus tcp://") from None
        try:
            yield client
        finally:
            client.close()
        return
    _, dashboard_host, dashboard_port = _split_address(dashboard_address)
    if dashboard_port is None:
        raise ValueError(f"dashboard_address must look like 'host:port' or ':port'; got {dashboard_address!r}")
    if not dashboard_host:  # ":port": distributed would listen on every interface
        dashboard_host = "127.0.0.1"
    elif not _is_loopback(dashboard_host):
        warnings.warn(f"the Dask dashboard listens on {dashboard_host} (port {dashboard_port}), reachable from "
                      f"other machines; {_NO_AUTH}", UserWarning, stacklevel=3)
    bind = f"[{dashboard_host}]" if ":" in dashboard_host else dashboard_host
    default_workers, default_threads = _default_workers()
    workers = n_workers or default_workers
    threads = threads_per_worker or (max(1, (os.cpu_count() or 1) // workers) if n_workers else default_threads)
    # worker processes talk over TCP on loopback; threaded workers share this process (inproc://)
    # but each still starts an HTTP server, which distributed binds to every interface unless told
    network = {"host": "127.0.0.1"} if processes else {"worker_dashboard_address": "127.0.0.1:0"}
    import dask

    # the workers' statistical profiler keeps a call tree per second of work (profile_history,
    # up to distributed.admin.low-level-log-length cycles): ~60 MB per worker over a 10-minute
    # stage, growing with the movie's length; off, memory stays flat (the dashboard keeps the
    # task stream, progress and memory; only its Profile page is empty). A nanny hands this
    # configuration to the worker process it spawns.
    with _own_environment(), dask.config.set(_WORKER_CONFIG):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            memory_limit=memory_limit,
            dashboard_address=f"{bind}:{dashboard_port}",
            # a failed task reaches the caller as its exception, which temflow turns into one line;
            # the workers' own "Compute Failed" ERROR logs would print that failure a second time
            silence_logs=50,
            **network,
        )
    # the link distributed prints names the machine's address for an inproc:// scheduler
    link = {"distributed.dashboard.link": "{scheme}://" + bind + ":{port}/status"} if _is_loopback(
        dashboard_host) else {}
    try:
        with dask.config.set(link):
            client = Client(cluster, set_as_default=True)
            try:
                # a worker restarted by its nanny (after running out of memory) sets the variables
                # again: restore them when the block ends too
                with _own_environment():
                    yield client
            finally:
                client.close()
    finally:
        cluster.close()


def dashboard_link(client: Any) -> str | None:
    """The dashboard's URL, or None when the cluster has no dashboard."""
    try:
        return str(client.dashboard_link)
    except (AttributeError, KeyError):
        return None
