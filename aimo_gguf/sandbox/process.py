"""``Sandbox``: one persistent worker process, its private folder and its line protocol.

The worker program is ``aimo_gguf/sandbox/worker.py``, run by path. Each
worker's folder is named after the process that owns it
(``aimo-sandbox-<pid>-...``), so a run killed with SIGKILL leaves folders the
next run can tell are stale and remove (``remove_stale_folders``).
"""

from __future__ import annotations

import functools
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path

import psutil

from ..errors import AimoError

KILL_GRACE_SECONDS = 0.5  # after the soft interrupt, how long a call may take to stop before the kill
START_TIMEOUT_SECONDS = 20.0  # a worker that has not said hello by then is killed
MAX_REPLY_BYTES = 2**20  # a reply line longer than this means the protocol was corrupted
OUTPUT_CUT_MARK = "\n... [output cut: {n} characters] ...\n"
WORKER = Path(__file__).with_name("worker.py")  # the program every worker process runs
FOLDER_PREFIX = "aimo-sandbox-"  # + the owner's pid + "-" + random: /tmp/aimo-sandbox-1234-k3j2x


class SandboxError(AimoError):
    """The sandbox itself failed (a worker cannot start, or it is used after close)."""

    exit_code = 1


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one worker process. Each field is one wall; see the module docstring."""

    timeout: float = 10.0  # wall-clock seconds per call; then interrupted, KILL_GRACE_SECONDS later killed
    cpu_seconds: int = 20  # CPU seconds over the worker's whole life (all its calls); then killed
    memory_mb: int = 2048  # address space (RLIMIT_AS); allocations beyond raise MemoryError
    max_output: int = 2000  # characters of output kept; longer output keeps its head and tail
    max_processes: int = 16  # RLIMIT_NPROC headroom over the user's tasks; not enforced for root
    file_mb: int = 64  # largest file the code may write (RLIMIT_FSIZE)
    network: bool = False  # False: private network namespace, sockets refused


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one ``Sandbox.run``."""

    ok: bool  # the code ran to its end without an exception
    output: str  # stdout (or a trailing expression's repr); on failure the error's last line
    status: str  # "ok" | "error" | "timeout" | "crashed" (the worker died and was replaced)
    seconds: float  # wall-clock time of the call as the caller saw it


@dataclass(frozen=True)
class Protections:
    """The walls a worker reported standing behind once it had started."""

    audit_hook: bool = False  # Python-level refusals (sockets, processes, ctypes, files outside)
    rlimits: bool = False  # address space, CPU, file size, core dumps, open files
    nproc: bool = False  # RLIMIT_NPROC in force (the kernel exempts root from it)
    network_namespace: bool = False  # private network namespace without interfaces
    landlock: int = 0  # Landlock ABI version enforcing the file rules; 0 = not active
    seccomp: bool = False  # kernel-level refusal of fork, exec, sockets, kill of others, ...
    dies_with_parent: bool = False  # SIGKILLed by the kernel when the run that started it ends (PR_SET_PDEATHSIG)

    def active(self) -> list[str]:
        """Names of the protections in force, e.g. ``["audit_hook", "rlimits", "landlock"]``."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


class Sandbox:
    """One persistent worker process with a private working folder.

    ``run`` blocks until the code finishes, times out or kills its worker; it
    never raises for what the code does. The worker starts in the constructor;
    after a timeout kill or a crash the next ``run`` starts a fresh one.
    """

    def __init__(self, limits: SandboxLimits = DEFAULT_LIMITS, *, preload: bool = True,
                 audit_hook: bool = True) -> None:
        """``preload``: put math, fractions, Fraction, itertools, functools and collections
        in the namespace, and numpy (also ``np``) and sympy (also ``sp``) the first
        time a cell names them; False gives a bare namespace. ``audit_hook``: False
        leaves only the kernel walls (for testing them)."""
        if not sys.executable:
            raise SandboxError("Python's own executable is unknown (sys.executable is empty); "
                               "run aimo-gguf with a regular Python interpreter.")
        self.limits = limits
        self.preload = preload
        self.audit_hook = audit_hook
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")).resolve()
        self.protections = Protections()
        self._run_lock = threading.Lock()  # one call at a time
        self._state_lock = threading.Lock()  # guards _proc and _closed
        self._proc: subprocess.Popen | None = None
        self._closed = False
        self._next_id = 0
        self._pending = bytearray()  # bytes read past the last reply
        self._live: list[subprocess.Popen] = []  # what the finalizer must kill
        self._finalizer = weakref.finalize(self, _cleanup, self._live, str(self.workdir))
        try:
            with self._state_lock:
                self._start()
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int | None:
        """The worker's process id, or None while no worker runs."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def run(self, code: str) -> ToolResult:
        """Run ``code`` in the worker and return what it printed or the error's last line."""
        with self._run_lock:
            started = time.monotonic()
            with self._state_lock:
                if self._closed:
                    raise SandboxError("This Sandbox is closed; create a new one.")
                if self._proc is None:
                    self._start()
                proc = self._proc
            self._next_id += 1
            request = (json.dumps({"id": self._next_id, "code": code}) + "\n").encode()
            deadline = time.monotonic() + self.limits.timeout + KILL_GRACE_SECONDS
            died = False
            try:
                _write_all(proc, request, deadline)
                reply = self._read_message(proc, deadline)
            except TimeoutError:  # it stopped reading its requests
                reply = None
            except (EOFError, BrokenPipeError, ConnectionResetError):
                died, reply = True, {}
            except ValueError:  # not our JSON: something wrote over the channel
                reply = {}
            if reply is None:
                self._retire(proc)
                return ToolResult(False, f"TimeoutError: the code ran longer than {self.limits.timeout:g} s "
                                  "and was killed; the Python session was restarted, so variables from "
                                  "earlier code are gone", "timeout", time.monotonic() - started)
            if reply.get("id") != self._next_id or "status" not in reply:
                exit_code = self._retire(proc)
                what = _death(exit_code, self.limits) if died else "wrote over the sandbox's own channel"
                return ToolResult(False, f"RuntimeError: the Python process {what} and was restarted; "
                                  "variables from earlier code are gone", "crashed", time.monotonic() - started)
            status = reply["status"]
            return ToolResult(status == "ok", reply["output"], status, time.monotonic() - started)

    def close(self) -> None:
        """Kill the worker (a call in flight reports "crashed") and remove the working folder."""
        with self._state_lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None:
            _kill(proc)
        with self._run_lock:  # a call in flight sees its worker die before pipes and folder go
            self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        """Start a worker and wait for its hello; caller holds ``_state_lock``."""
        config = worker_config(self.limits, preload=self.preload, audit_hook=self.audit_hook)
        workdir = str(self.workdir)
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": workdir,
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMEXPR_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
        proc = _LAUNCHER.popen(
            [sys.executable, "-I", "-B", str(WORKER), json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=workdir, env=env, start_new_session=True, bufsize=0,
        )
        self._live[:] = [proc]
        self._pending.clear()
        try:
            hello = self._read_message(proc, time.monotonic() + START_TIMEOUT_SECONDS)
        except (EOFError, OSError, ValueError):
            hello = None
        if not hello or "hello" not in hello:
            _kill(proc)
            detail = (proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()
            _close_pipes(proc)
            raise SandboxError("The sandbox worker did not start"
                               + (f": {detail[-1]}" if detail else ".")
                               + f" Check that {sys.executable} runs.")
        proc.stderr.close()
        self.protections = Protections(**hello["protections"])
        self._proc = proc

    def _read_message(self, proc: subprocess.Popen, deadline: float) -> dict | None:
        """The next JSON object from the worker; None at the deadline. Raises EOFError, ValueError."""
        fd = proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the worker closed its channel")
            self._pending += chunk
            if len(self._pending) > MAX_REPLY_BYTES:
                raise ValueError("reply too long")
        line, _, rest = bytes(self._pending).partition(b"\n")
        self._pending[:] = rest
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("reply is not an object")
        return message

    def _retire(self, proc: subprocess.Popen) -> int | None:
        """Kill a worker that timed out or died; the next call starts a fresh one. Returns its exit code."""
        with self._state_lock:
            owner = self._proc is proc
            if owner:
                self._proc = None
        if owner:
            code = _kill(proc)
            _close_pipes(proc)
            return code
        try:  # close() killed it already; its pipes close with the folder
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


def worker_config(limits: SandboxLimits, *, preload: bool, audit_hook: bool) -> dict:
    """The settings a worker program reads from its argument (JSON); ``parent`` is the process it dies with."""
    return {"timeout": limits.timeout, "cpu_seconds": limits.cpu_seconds, "memory_mb": limits.memory_mb,
            "max_output": limits.max_output, "max_processes": limits.max_processes, "file_mb": limits.file_mb,
            "network": limits.network, "preload": preload, "audit_hook": audit_hook, "cut_mark": OUTPUT_CUT_MARK,
            "parent": os.getpid()}


class _Launcher:
    """Starts every worker from one thread that lives as long as the process. A worker asks the kernel
    to kill it when its parent ends (PR_SET_PDEATHSIG), and the kernel's parent is the *thread* that
    started it: a worker started from a short-lived thread would die with that thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._pid = 0  # the process that started the thread: a forked child needs its own

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._queue is None or self._pid != os.getpid():
                self._queue, self._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=self._serve, args=(self._queue,), name="sandbox-launcher",
                                 daemon=True).start()
            requests = self._queue
        started: Future[subprocess.Popen] = Future()
        requests.put((args, kwargs, started))
        return started.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue) -> None:
        while True:
            args, kwargs, started = requests.get()
            try:
                started.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - the caller gets it from the Future
                started.set_exception(error)


_LAUNCHER = _Launcher()


def start_process(*args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(...)`` from the one long-lived launcher thread, for a child that asks the kernel to
    kill it when its parent ends (PR_SET_PDEATHSIG): the sandbox's workers, the engine process."""
    return _LAUNCHER.popen(*args, **kwargs)


def _write_all(proc: subprocess.Popen, data: bytes, deadline: float) -> None:
    fd = proc.stdin.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise TimeoutError("the worker does not read its requests")
        view = view[os.write(fd, view):]


def _kill(proc: subprocess.Popen) -> int | None:
    """Kill a worker, its process group and every descendant still found; returns its exit code."""
    if proc.returncode is None:
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its session and group id is its pid
        except (ProcessLookupError, PermissionError):
            pass
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _close_pipes(proc: subprocess.Popen) -> None:
    """Close our ends of a dead worker's pipes (only where no other thread reads them)."""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _cleanup(live: list[subprocess.Popen], workdir: str) -> None:
    for proc in live:
        _kill(proc)
        _close_pipes(proc)
    live.clear()
    shutil.rmtree(workdir, ignore_errors=True)


def _death(code: int | None, limits: SandboxLimits) -> str:
    """How a worker ended, in words for the model."""
    if code is None:
        return "stopped answering"
    if code >= 0:
        return f"exited with code {code}"
    if -code == signal.SIGXCPU:
        return f"used up its CPU time ({limits.cpu_seconds} s)"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"crashed ({name})"


@functools.cache
def protections(network: bool = False) -> Protections:
    """What a worker can be fenced in by on this machine (starts one probe worker, once)."""
    with Sandbox(SandboxLimits(network=network), preload=False) as sandbox:
        return sandbox.protections


def remove_stale_folders(root: str | Path | None = None) -> list[Path]:
    """Remove the worker folders (``aimo-sandbox-<pid>-*`` in ``root``, default the temp folder)
    whose owner process is gone: what a run killed with SIGKILL left behind. Returns them."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    try:
        candidates = list(root.glob(f"{FOLDER_PREFIX}*-*"))
    except OSError:
        return removed
    for folder in candidates:
        pid_text = folder.name[len(FOLDER_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if _owner_alive(int(pid_text), folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed


def _owner_alive(pid: int, folder: Path) -> bool:
    """Whether ``pid`` still runs and is the process that made ``folder`` (not a later one given its pid)."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: leave it
    try:
        made = folder.stat().st_mtime
    except OSError:
        return True
    return started <= made + 1.0
