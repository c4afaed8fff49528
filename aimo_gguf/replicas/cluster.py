"""The Ray connection: the one module that imports Ray, joining a run's cluster in bounded time.

A run's cluster is a local one started, or the one at ``--ray ADDRESS``.

``ray.init`` at an address where nothing answers retries for many minutes
with connection warnings, and a SIGTERM meanwhile waits until its C++ returns
(tens of seconds) and then exits without the run's results. So before
``ray.init`` the address Ray would dial is tried in Python: it must take a
connection and answer gRPC's first message (HTTP/2's SETTINGS frame, which
both Ray's GCS and its Client server send) within ``CONNECT_SECONDS``, or
the run's deadline if sooner; otherwise it is one ``Error:`` line. The wait
is in Python, so a stop signal ends it at once and the run writes its
fallbacks.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from ..config import RunConfig
from ..errors import InputError
from ..pipeline.interrupt import SIGNALS, Stopped

OBJECT_STORE_BYTES = 80 * 2**20  # a local cluster's object store: results are small (Ray's minimum is 75 MiB)
CONNECT_SECONDS = 10.0  # --ray ADDRESS: the most its cluster may take to answer before the run gives up
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # preface + SETTINGS


def require_ray():
    """The ``ray`` module, or the one-line error naming the extra."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'aimo-gguf[ray]'") from None
    return ray


def node_address() -> str:
    """This node's address in its Ray cluster (inside a replica), "?" where Ray cannot say: only a label."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        return "?"


def unmasked(call, *args, **kwargs):
    """``call(...)``, but a stop signal raised inside Ray's C++ (a ``Stopped`` or KeyboardInterrupt from the
    handler, wrapped by Cython in a SystemError) comes out as itself, for the runner to write the results."""
    try:
        return call(*args, **kwargs)
    except SystemError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None
        raise


def join_cluster(ray, config: RunConfig, *, timeout: float = CONNECT_SECONDS) -> None:
    """``ray.init`` for ``config.ray``: "local" starts a local cluster, anything else is an address,
    first checked to answer within ``timeout`` s. Errors are one line; a SIGTERM is the run's stop."""
    if config.ray != "local":
        check_reachable(config.ray, timeout=timeout)
    handlers = _signal_handlers()
    options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    try:
        if config.ray == "local":
            threads = config.threads or 1
            cpus = max(os.cpu_count() or 1, (config.replicas or 1) * threads)
            # "local": a new instance even where RAY_ADDRESS or an earlier `ray start` names a cluster
            ray.init(address="local", num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES, **options)
        else:
            ray.init(address=config.ray, **options)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(f"--ray {config.ray}: cannot reach a Ray cluster ({first_line(e)})") from None
    except SystemExit as e:  # ray.init's own SIGTERM handler exits: the run's stop, which writes the fallbacks
        if e.code == signal.SIGTERM:
            raise Stopped(signal.SIGTERM) from None
        raise
    finally:
        _restore(handlers)  # ray.init replaces SIGTERM's handler: the run's own must stay


def check_reachable(address: str, *, timeout: float = CONNECT_SECONDS) -> None:
    """One line within ``timeout`` s unless something at the address Ray would dial for ``address`` takes a
    connection and answers gRPC's first message."""
    target = dialed(address)
    if target is None:
        return  # Ray finds no address to dial ("auto" with no cluster): ray.init says so at once
    why = no_grpc_answer(*target, timeout=timeout)
    if why is not None:
        raise InputError(f"--ray {address}: no Ray cluster answers at {target[0]}:{target[1]} ({why})")


def dialed(address: str) -> tuple[str, int] | None:
    """The host and port the driver dials for ``address``: a Ray Client's ``ray://host:port``, else Ray's own
    reading of it (``auto`` from RAY_ADDRESS or the last ``ray start``; a local name becomes this node's IP)."""
    if address.startswith("ray://"):
        target = address[len("ray://"):].split("/")[0]
    else:
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address(address)
        except Exception:  # noqa: BLE001 - a bad address: ray.init's own one-line error says which
            return None
    if not target:
        return None
    host, _, port = target.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def no_grpc_answer(host: str, port: int, *, timeout: float) -> str | None:
    """Why nothing at ``host:port`` answers as a gRPC server (a Ray GCS, a Ray Client server) does within
    ``timeout`` s, or None when it does."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() not in ("", "0", "false"):
                return None  # behind TLS the plain HTTP/2 hello below means nothing: the connection will do
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            conn.sendall(HTTP2_HELLO)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return e.strerror or str(e)
    if len(head) < 9 or head[3] != 0x04:  # a server's first HTTP/2 frame is its SETTINGS
        return "what answers there is not a Ray cluster"
    return None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _signal_handlers() -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in SIGNALS}


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)
