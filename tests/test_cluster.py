"""The cluster helper: loopback by default, existing schedulers by address, TLS when asked."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from temflow.cluster import connect, dashboard_link


def test_local_cluster_is_bound_to_loopback_and_has_a_dashboard():
    with connect(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        for address in client.scheduler_info()["workers"]:
            assert address.startswith("tcp://127.0.0.1:")
        assert dashboard_link(client).startswith("http://127.0.0.1:")
        assert client.submit(sum, [1, 2, 3]).result() == 6


def _certificates(folder):
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


def test_tls_scheduler_is_reached_with_certificates(tmp_path):
    from distributed import LocalCluster
    from distributed.security import Security

    cert, key = _certificates(tmp_path)
    security = Security(
        tls_ca_file=cert, tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_worker_cert=cert, tls_worker_key=key, tls_client_cert=cert, tls_client_key=key,
        require_encryption=True,
    )
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
        security=security, dashboard_address="127.0.0.1:0",
    ) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with connect(cluster.scheduler_address, tls_ca_file=cert, tls_cert=cert, tls_key=key) as client:
            assert client.submit(lambda x: x * 2, 21).result() == 42


def test_bad_cluster_arguments(tmp_path):
    with pytest.raises(ValueError, match="all of tls_ca_file"):
        with connect("tls://127.0.0.1:1", tls_ca_file="x"):
            pass
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ValueError, match="is not tls://"):
        with connect("tcp://127.0.0.1:1", tls_ca_file=str(cert), tls_cert=str(cert), tls_key=str(cert)):
            pass
    with pytest.raises(ValueError, match="does not exist"):
        with connect("tls://127.0.0.1:1", tls_ca_file="nope", tls_cert="nope", tls_key="nope"):
            pass
    with pytest.raises(ValueError, match="n_workers"):
        with connect(n_workers=0):
            pass


def _listening(pid_root):
    psutil = pytest.importorskip("psutil")
    me = psutil.Process(pid_root)
    found = []
    for process in [me, *me.children(recursive=True)]:
        try:
            found += [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("processes", [True, False])
def test_every_socket_of_a_local_cluster_is_on_loopback(processes):
    import os

    before = set(_listening(os.getpid()))
    with connect(n_workers=1, threads_per_worker=1, processes=processes, dashboard_address=":0") as client:
        opened = [address for address in _listening(os.getpid()) if address not in before]
        assert opened, "the cluster should listen somewhere (dashboard, worker HTTP server)"
        assert all(ipaddress.ip_address(a.ip).is_loopback for a in opened), opened
        assert dashboard_link(client).startswith("http://127.0.0.1:")
        assert client.submit(sum, [1, 2]).result() == 3


def test_a_dashboard_off_loopback_is_honoured_with_a_warning():
    import os

    with pytest.warns(UserWarning, match="no authentication"):
        with connect(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="0.0.0.0:0") as client:
            hosts = {a.ip for a in _listening(os.getpid())}
            assert "0.0.0.0" in hosts
            assert client.submit(sum, [1, 2]).result() == 3


def test_an_unreachable_scheduler_is_refused_quickly():
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"):
        with connect(f"tcp://127.0.0.1:{port}"):
            pass
    with pytest.raises(ValueError, match="must look like"):
        with connect("tcp://127.0.0.1"):
            pass
    assert time.perf_counter() - started < 10
_SAME_RUN = """
import contextlib, hashlib, json, os, sys, tempfile
from temflow.cluster import connect



def main():
    mode = sys.argv[1]
    cluster = connect(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") if mode == "local" else contextlib.nullcontext()
    with cluster as client:
        worker_env = client.run(lambda: os.environ.get("OMP_NUM_THREADS")) if client is not None else {}
        here = os.environ.get("OMP_NUM_THREADS")
        import torch
        from temflow.segmentation.models import UNet
        from temflow.segmentation.tiles import TileDataset, make_tile_set
        from temflow.segmentation.training import train
        from temflow.synthetic.generator import make_movie

        truth = make_movie(frames=4, size=32, seed=5)
        store = make_tile_set(truth.movie, tempfile.mkdtemp() + "/t.zarr", tile_size=16, frames=4, masks=truth.labels, blocks=2)
        torch.manual_seed(0)
        model, _ = train(UNet(depth=1, width=8), TileDataset(store, seed=1), epochs=1, batch_size=8, device="cpu", seed=3)
        digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in model.state_dict().values())).hexdigest()
        print(json.dumps({"env": here, "workers": sorted(worker_env.values()), "threads": torch.get_num_threads(), "weights": digest}))


if __name__ == "__main__":  # the workers are spawned processes that import this file
    main()
"""


@pytest.mark.slow
def test_a_local_cluster_leaves_this_process_threads_and_the_same_run_trains_the_same_model(tmp_path):
    # the nannies set OMP_NUM_THREADS=1 here before spawning; torch imported after them ran on one thread
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    script = tmp_path / "same_run.py"
    script.write_text(_SAME_RUN)
    runs = {}
    for mode in ("local", "none"):
        result = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    local, alone = runs["local"], runs["none"]
    assert local["env"] is None and local["workers"] == ["1"]  # the workers keep their one BLAS thread
    assert local["threads"] == alone["threads"]
    assert local["weights"] == alone["weights"]


@pytest.mark.parametrize("reply, match", [(b"\xff" * 64, "cannot connect to a Dask scheduler .* handshake failed"),
                                          (None, "accepts connections but sends nothing"),
                                          (b"", "closes them at once")])
def test_something_that_is_not_a_scheduler_is_refused_in_one_line(reply, match):
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held = []

    def answer():  # a web server, a proxy, a silent service: every connection gets the same reply
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            if reply is None:
                held.append(connection)  # silent: never answers
            elif reply:
                connection.sendall(reply)  # bytes dask reads as a huge frame length
                held.append(connection)
            else:
                connection.close()

    threading.Thread(target=answer, daemon=True).start()
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            with connect(f"tcp://127.0.0.1:{port}"):
                pass
    finally:
        server.close()
        for connection in held:
            connection.close()
    assert "\n" not in str(info.value)
    assert time.perf_counter() - started < 15


def _silent_server(tmp_path, tls):
    """A local server that accepts connections (and, with ``tls``, completes the TLS handshake) and never speaks."""
    import socket
    import ssl
    import threading

    cert, key = _certificates(tmp_path)
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def accept():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            if context is not None:
                connection.settimeout(30)
                try:
                    connection = context.wrap_socket(connection, server_side=True)
                except OSError:  # temflow's probe gave up first
                    pass
            held.append(connection)  # silent: never writes a byte

    threading.Thread(target=accept, daemon=True).start()

    def close():
        server.close()
        for connection in held:
            connection.close()

    return server.getsockname()[1], cert, key, close


@pytest.mark.parametrize("scheme, tls_server, match", [
    ("tcp", False, "accepts connections but sends nothing within 1 s"),
    ("tls", False, "does not answer the TLS handshake within 1 s"),
    ("tls", True, "accepts connections but sends nothing within 1 s"),  # TLS done, then silence: Client hung here
])
def test_a_silent_peer_is_refused_in_bounded_time(tmp_path, scheme, tls_server, match):
    import time

    port, cert, key, close = _silent_server(tmp_path, tls_server)
    files = {"tls_ca_file": cert, "tls_cert": cert, "tls_key": key} if scheme == "tls" else {}
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            with connect(f"{scheme}://127.0.0.1:{port}", timeout_s=1.0, **files):
                pass
    finally:
        close()
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message
    assert "timeout_s" in message or "tcp://" in message  # what to do
    assert elapsed < 6, elapsed  # 1 s per step (connect, handshake, first byte), not forever


def test_a_tls_address_without_tls_files_is_refused_before_connecting(tmp_path):
    port, _, _, close = _silent_server(tmp_path, False)
    try:
        with pytest.raises(ValueError, match="is tls:// but no TLS files were given"):
            with connect(f"tls://127.0.0.1:{port}"):
                pass
        with pytest.raises(ValueError, match="timeout_s must be a positive"):
            with connect(f"tcp://127.0.0.1:{port}", timeout_s=float("nan")):
                pass
    finally:
        close()


def test_a_run_file_sets_the_connection_timeout_and_names_the_key(tmp_path):
    import time

    from temflow.pipeline.config import Config
    from temflow.pipeline.runner import run

    port, cert, key, close = _silent_server(tmp_path, True)
    cluster = {"scheduler": f"tls://127.0.0.1:{port}", "tls_ca_file": cert, "tls_cert": cert, "tls_key": key,
               "connect_timeout_s": 1.0}
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(tmp_path / "out")},
                               "cluster": cluster}, source="run.toml")
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=r"run.toml: cluster.scheduler: something at .* sends nothing within 1 s"):
            run(config)
    finally:
        close()
    assert time.perf_counter() - started < 6
    for value, match in ((0, "cluster.connect_timeout_s must be positive"), (1e9, "cluster.connect_timeout_s must be at most 600"),
                         (float("nan"), "cluster.connect_timeout_s")):
        with pytest.raises(ValueError, match=f"run.toml: {match}"):
            Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "cluster": {"connect_timeout_s": value}},
                             source="run.toml")


@pytest.mark.parametrize("processes", [True, False])
def test_local_workers_keep_no_profile_history_that_grows_with_the_run(processes):
    # distributed's statistical profiler keeps one call tree per second of work on every worker
    # (about 60 MB per worker over a 10-minute masks stage): temflow's local workers run without it
    import time

    def busy(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(range(1000))
        return seconds

    with connect(n_workers=1, threads_per_worker=1, processes=processes, dashboard_address=":0") as client:
        assert client.submit(busy, 2.5).result() == 2.5
        state = client.run(lambda dask_worker: (len(dask_worker.profile_history), len(dask_worker.profile_keys_history)))
    assert list(state.values()) == [(0, 0)]
