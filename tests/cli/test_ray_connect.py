"""``--ray ADDRESS`` where no Ray cluster answers (issue 20, item 9): one line in bounded time, and a stop
signal during the wait still writes every fallback. No cluster is started here: the address is a port
nothing listens on, one that takes connections and says nothing, or one that answers as no Ray cluster does."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading

import pytest
from helpers import assert_one_line_error, clean_env, time_limit

from aimo_gguf.cli import cli
from aimo_gguf.replicas import cluster

pytest.importorskip("ray")


@pytest.fixture
def files(tmp_path):
    problems = tmp_path / "p.csv"
    problems.write_text("id,problem\na,What is 1 + 1?\nb,What is 2 + 2?\nc,What is 3 + 3?\n")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))  # nothing gets as far as loading it
    return problems, model


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@contextlib.contextmanager
def listener(reply: bytes | None):
    """A TCP server on every interface (Ray dials this node's address for 127.0.0.1) that takes each
    connection and sends ``reply`` (None: nothing) and keeps it open. Yields (port, accepted event)."""
    server = socket.create_server(("0.0.0.0", 0))
    accepted, held, stop = threading.Event(), [], threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)
            accepted.set()
            if reply is not None:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def run_args(files, tmp_path, address):
    problems, model = files
    return ["run", str(problems), "-m", str(model), "-o", str(tmp_path / "s.csv"), "--ray", address,
            "--replicas", "1", "-q"]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "localhost:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_where_nothing_listens_is_one_line_at_once(runner, files, tmp_path, form):
    port = closed_port()
    with time_limit(20, "--ray at a closed port"):
        result = runner.invoke(cli, run_args(files, tmp_path, form.format(port=port)))
    assert_one_line_error(result, f"--ray {form.format(port=port)}", f":{port} (", "no Ray cluster answers")
    assert not (tmp_path / "s.csv").exists()


def test_auto_dials_what_ray_address_names(runner, files, tmp_path, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with time_limit(20, "--ray auto at a closed port"):
        result = runner.invoke(cli, run_args(files, tmp_path, "auto"))
    assert_one_line_error(result, "--ray auto", f":{port} (", "no Ray cluster answers")


@pytest.mark.parametrize(("reply", "why"), [
    (None, "no answer within 1 s"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a Ray cluster"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not a Ray cluster"),
    (b"", "no answer within 1 s"),
])
def test_an_address_that_does_not_answer_as_ray_is_one_line_within_the_bound(runner, files, tmp_path, monkeypatch,
                                                                              reply, why):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1.0)
    monkeypatch.setattr("aimo_gguf.replicas.on_ray.CONNECT_SECONDS", 1.0)
    with listener(reply) as (port, accepted), time_limit(20, "--ray at a silent port"):
        result = runner.invoke(cli, run_args(files, tmp_path, f"127.0.0.1:{port}"))
    assert_one_line_error(result, "no Ray cluster answers", why)
    assert accepted.is_set()


def test_the_bound_is_the_documented_one():
    assert cluster.CONNECT_SECONDS == 10.0  # README, Replicas on Ray: "within 10 s"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_while_waiting_for_the_cluster_writes_every_fallback(files, tmp_path, signum):
    out = tmp_path / "s.csv"
    with listener(None) as (port, accepted):
        proc = subprocess.Popen([sys.executable, "-m", "aimo_gguf", *run_args(files, tmp_path, f"127.0.0.1:{port}")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        try:
            assert accepted.wait(60), "the run never dialed the address"
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert out.read_text().splitlines() == ["id,answer", "a,0", "b,0", "c,0"]
