"""Run model-written Python in persistent, fenced-off worker processes.

For tool-integrated reasoning a model writes Python in ```python blocks; the
code runs here and its output goes back into the model's text. Each sample
gets a ``Sandbox``: one worker process whose variables survive between calls,
like a notebook kernel. ``SandboxPool`` runs the calls of many samples at once
on background threads, so a decode loop never waits on them.

A worker starts in about 50 ms (``python -I -B`` plus its walls) and a call
costs about 0.1 ms beyond the code itself. Its namespace starts with math,
fractions, Fraction, itertools, functools and collections; numpy (``np``) and
sympy (``sp``) are imported the first time a cell names them (0.1-0.3 s, once
per worker), so samples that never use them never pay for them.

What one call gives back (``ToolResult``):

- ``ok``: the code ran to its end without an exception.
- ``output``: what the code printed on stdout (stderr is dropped), or, when it
  printed nothing and ends with an expression whose value is not None, the
  ``repr`` of that value (like a notebook cell). On an error, only the last
  line of the traceback (``ZeroDivisionError: division by zero``). Output
  longer than ``SandboxLimits.max_output`` characters keeps its head and its
  tail around a ``... [output cut: N characters] ...`` line. ``SystemExit``
  with code 0 or None ends a cell normally.
- ``status``: ``ok``, ``error``, ``timeout`` or ``crashed``.

``cpu_seconds`` counts the CPU time of the worker's whole life, all its calls
together: it stops a sample that burns CPU call after call (or in threads it
left running), where ``timeout`` stops one call. Past it the kernel kills the
worker; the call reports ``crashed`` and the next call gets a fresh worker.

Timeouts and crashes. After ``timeout`` seconds the worker interrupts the code
(a ``BaseException``, so ``except Exception`` does not swallow it); the
variables stay. Code that does not stop within ``KILL_GRACE_SECONDS`` more
(a long C call, code that catches BaseException or ignores SIGALRM) is killed
with its whole process group.
A killed or dead worker (memory, CPU time, ``os._exit``, a segfault) is
replaced by a fresh one at the next call: its variables are gone, and the
result says so in words the model can read. The working folder stays.

What a worker is fenced in by, from the softest wall to the hardest (see
``protections()`` for what this machine allows):

- an audit hook (``sys.addaudithook``) that refuses sockets, subprocesses,
  ``os.system``/``exec*``/``spawn*``/``fork``/``kill``, ``ctypes``, changing
  resource limits, opening files for writing outside the working folder,
  reading files outside it and Python's own install (so imports still work),
  and removing, renaming or creating paths outside it;
- resource limits: address space (``MemoryError`` beyond it), CPU seconds over
  the worker's life, file size, no core dumps, open files, and processes
  (``RLIMIT_NPROC``; the kernel exempts root from it);
- its own session and process group, killed as a whole (plus any descendant
  psutil still finds) on timeout and on close;
- a private network namespace with no interfaces (needs CAP_SYS_ADMIN);
- Landlock (Linux >= 5.13): the kernel itself allows reading only Python's
  install, system libraries and the working folder, writing only the working
  folder; from ABI 4 no TCP bind/connect, from ABI 6 no signals to processes
  outside the sandbox;
- seccomp (Linux x86-64): the kernel refuses fork, vfork, non-thread clone,
  execve, sockets, ptrace, kill of any other process, raising limits, mounts,
  namespaces, io_uring, setsid and similar.

What it does NOT promise: this is a guard against accidents and runaway model
code, not a security boundary against a determined attacker. Audit hooks can be
bypassed from inside Python: they live in the same interpreter as the code,
and, for one, calls through ctypes functions that already exist (``ctypes.memmove``)
raise no audit event in Python 3.11. The kernel walls (rlimits, network
namespace, Landlock, seccomp) are harder, but the worker runs as the parent's
user (root in our container), shares its kernel, and gets them only where the
machine supports them. Not contained: filling the disk with many files of up
to ``file_mb`` each inside the working folder; threads the code leaves running
after a call (until the CPU limit kills the worker); memory the kernel counts
outside the address space (page cache, pipes). Detected rather than prevented:
code writing to the protocol's file descriptor; the worker is then restarted.

The protocol: one JSON object per line on the worker's own copies of its
stdin and stdout; fds 0, 1 and 2 are pointed at /dev/null once it has started,
and ``sys.stdout`` is a capture buffer while a cell runs.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import psutil

from .errors import AimoError

KILL_GRACE_SECONDS = 0.5  # after the soft interrupt, how long a call may take to stop before the kill
START_TIMEOUT_SECONDS = 20.0  # a worker that has not said hello by then is killed
MAX_REPLY_BYTES = 2**20  # a reply line longer than this means the protocol was corrupted
OUTPUT_CUT_MARK = "\n... [output cut: {n} characters] ...\n"


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

    def active(self) -> list[str]:
        """Names of the protections in force, e.g. ``["audit_hook", "rlimits", "landlock"]``."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


# The worker program. It runs as ``python -I -B -c _WORKER_SOURCE CONFIG_JSON``
# and talks one JSON object per line: a hello once started, then one reply
# per request ``{"id": n, "code": "..."}``. It is a string so that it depends
# on nothing but the standard library and never imports this package.
_WORKER_SOURCE = r'''
import ast, builtins, collections, contextlib, ctypes, fractions, functools, io, itertools
import json, math, os, platform, resource, signal, site, stat, struct, sys, traceback, types
from fractions import Fraction

CONFIG = json.loads(sys.argv[1])
sys.argv = [""]
WORKDIR = os.path.realpath(os.getcwd())
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
HEAVY = {"numpy": "numpy", "np": "numpy", "sympy": "sympy", "sp": "sympy"}  # name -> module
CHEAP = {"math": math, "fractions": fractions, "Fraction": Fraction, "itertools": itertools,
         "functools": functools, "collections": collections}


def take_protocol_fds():
    """Move the protocol off fds 0, 1 and 2, so writes to them cannot corrupt it."""
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return os.fdopen(fd_in, "rb"), fd_out


def lower_limit(which, soft, hard=None):
    hard = soft if hard is None else hard
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def tasks_of_user(uid):
    """Tasks (threads included) the kernel counts against ``uid``'s RLIMIT_NPROC."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as status:
                lines = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(lines["Uid"].split()[0]) == uid:
            count += int(lines["Threads"])
    return count


def set_limits():
    """Resource limits; returns whether RLIMIT_NPROC is in force (never for root)."""
    mib = 2**20
    lower_limit(resource.RLIMIT_AS, CONFIG["memory_mb"] * mib)
    lower_limit(resource.RLIMIT_CPU, CONFIG["cpu_seconds"], CONFIG["cpu_seconds"] + 1)
    lower_limit(resource.RLIMIT_FSIZE, CONFIG["file_mb"] * mib)
    lower_limit(resource.RLIMIT_CORE, 0)
    lower_limit(resource.RLIMIT_NOFILE, 1024)
    if os.getuid() == 0 or not sys.platform.startswith("linux"):
        return False
    lower_limit(resource.RLIMIT_NPROC, tasks_of_user(os.getuid()) + CONFIG["max_processes"])
    return True


def private_network():
    """A new network namespace: no interfaces but a down loopback."""
    return sys.platform.startswith("linux") and LIBC.unshare(ctypes.c_int(0x40000000)) == 0


def syscall(number, *args):
    return LIBC.syscall(ctypes.c_long(number), *args)


def python_roots():
    """Folders Python's imports read: its prefixes and site-packages."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.__file__), *site.getsitepackages()}
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return sorted({os.path.realpath(r) for r in roots if os.path.isdir(r)})


SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime",
               "/usr/share/zoneinfo", "/sys/devices/system/cpu")


def landlock(read_roots):
    """Kernel file rules: read Python and system libraries, write only WORKDIR. Returns the ABI or 0."""
    if not sys.platform.startswith("linux"):
        return 0
    abi = syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint(1))
    if abi < 1:
        return 0
    handled = (1 << 13) - 1
    for version, bit in ((2, 13), (3, 14), (5, 15)):  # refer, truncate, ioctl_dev
        if abi >= version:
            handled |= 1 << bit
    net = 0b11 if abi >= 4 and not CONFIG["network"] else 0  # bind_tcp, connect_tcp
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", handled, net, scoped)[:size], size)
    ruleset = syscall(444, attr, ctypes.c_size_t(size), ctypes.c_uint(0))
    if ruleset < 0:
        return 0
    read = 1 | 4 | 8  # execute, read_file, read_dir
    file_rights = 1 | 2 | 4 | (1 << 14) | (1 << 15)  # rights that apply to a file, not a folder
    rules = [(path, read) for path in (*read_roots, *SYSTEM_READ)]
    rules += [(WORKDIR, handled), (os.devnull, 2 | 4 | (1 << 15))]
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= file_rights
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access & handled, fd), 12)
                syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint(0))
            finally:
                os.close(fd)
        no_new_privs()
        return abi if syscall(446, ctypes.c_int(ruleset), ctypes.c_uint(0)) == 0 else 0
    finally:
        os.close(ruleset)


def no_new_privs():
    LIBC.prctl(ctypes.c_int(38), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


# x86-64 syscall numbers refused with EPERM: processes, exec, tracing, namespaces,
# mounts, modules, keys, io_uring, ids, clocks, device nodes, ...
DENIED = (57, 58, 59, 322, 101, 310, 311, 272, 308, 165, 166, 155, 161, 169, 246, 320, 175, 313, 176,
          321, 298, 250, 248, 249, 160, 425, 426, 427, 304, 303, 323, 434, 424, 438, 129, 297, 200,
          112, 109, 105, 106, 113, 114, 117, 119, 116, 122, 123, 126, 167, 168, 164, 227, 305, 159,
          170, 171, 172, 173, 163, 179, 133, 259, 103, 300, 428, 429, 430, 431, 432, 433, 442, 153,
          134, 212, 180)
SOCKETS = (41, 53)  # socket, socketpair
CLONE, CLONE3, KILL, TGKILL, PRLIMIT64 = 56, 435, 62, 234, 302


def seccomp():
    """A seccomp filter refusing what DENIED lists; x86-64 Linux only. Returns whether it is in force."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return False
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill_process = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    clone_thread, pid = 0x00010000, os.getpid()

    def op(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)

    prog = [op(ld, 4), op(jeq, 0xC000003E, 1, 0), op(ret, kill_process),  # arch must be x86-64
            op(ld, 0), op(jge, 0x40000000, 0, 1), op(ret, enosys),  # no x32 syscalls
            # clone: threads only
            op(jeq, CLONE, 0, 4), op(ld, 16), op(jset, clone_thread, 0, 1), op(ret, allow), op(ret, eperm),
            # clone3 hides its flags in memory: ENOSYS makes glibc fall back to clone
            op(jeq, CLONE3, 0, 1), op(ret, enosys),
            # prlimit64: reading is fine, setting is not
            op(jeq, PRLIMIT64, 0, 6), op(ld, 32), op(jeq, 0, 0, 3), op(ld, 36), op(jeq, 0, 0, 1),
            op(ret, allow), op(ret, eperm)]
    for number in (KILL, TGKILL):  # signals to this process only
        prog += [op(jeq, number, 0, 6), op(ld, 16), op(jeq, pid, 0, 3), op(ld, 20), op(jeq, 0, 0, 1),
                 op(ret, allow), op(ret, eperm)]
    for number in DENIED + (() if CONFIG["network"] else SOCKETS):
        prog += [op(jeq, number, 0, 1), op(ret, eperm)]
    prog.append(op(ret, allow))
    code = b"".join(prog)
    buffer = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = Program(len(prog), ctypes.addressof(buffer))
    no_new_privs()
    return LIBC.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(program),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


def refuse_fork_exec():
    """_posixsubprocess.fork_exec raises no audit event: replace it."""
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        raise PermissionError("sandbox: starting processes is not allowed")

    _posixsubprocess.fork_exec = fork_exec


# Audit events refused outright, and those whose path arguments are checked:
# event -> ((path index, dir_fd index or None, "r" or "w"), ...)
REFUSED = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit",
           "resource.prlimit", "pty.spawn", "os.startfile", "webbrowser.open", "sys.remote_exec"}
PATHS = {"os.remove": ((0, 1, "w"),), "os.rmdir": ((0, 1, "w"),), "os.mkdir": ((0, 2, "w"),),
         "os.rename": ((0, 2, "w"), (1, 3, "w")), "os.link": ((0, 2, "r"), (1, 3, "w")),
         "os.symlink": ((1, 2, "w"),), "os.chmod": ((0, 2, "w"),), "os.chown": ((0, 3, "w"),),
         "os.utime": ((0, 3, "w"),), "os.truncate": ((0, None, "w"),), "os.chflags": ((0, None, "w"),),
         "os.lchflags": ((0, None, "w"),), "os.lchmod": ((0, None, "w"),), "os.setxattr": ((0, None, "w"),),
         "os.removexattr": ((0, None, "w"),), "os.getxattr": ((0, None, "r"),),
         "os.listxattr": ((0, None, "r"),), "os.listdir": ((0, None, "r"),), "os.scandir": ((0, None, "r"),),
         "os.chdir": ((0, None, "cd"),), "glob.glob": ((0, None, "r"),), "glob.glob/2": ((0, 3, "r"),),
         "shutil.rmtree": ((0, None, "w"),), "shutil.copyfile": ((0, None, "r"), (1, None, "w")),
         "shutil.copymode": ((1, None, "w"),), "shutil.copystat": ((1, None, "w"),),
         "shutil.copytree": ((0, None, "r"), (1, None, "w")), "shutil.move": ((0, None, "w"), (1, None, "w")),
         "shutil.chown": ((0, None, "w"),), "shutil.make_archive": ((0, None, "w"), (2, None, "r")),
         "shutil.unpack_archive": ((0, None, "r"), (1, None, "w")), "pathlib.Path.glob": ((0, None, "r"),),
         "pathlib.Path.rglob": ((0, None, "r"),)}
DEVICES = frozenset({"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def install_audit_hook(read_roots):
    sep, realpath, fsdecode, fspath = os.sep, os.path.realpath, os.fsdecode, os.fspath
    readable = (WORKDIR, *read_roots)
    writable = (WORKDIR,)
    refused_prefixes = ("ctypes.",) + (() if CONFIG["network"] else ("socket.",))

    def inside(path, roots):
        return path in DEVICES or any(path == root or path.startswith(root + sep) for root in roots)

    def resolve(path, dir_fd):
        if path is None:
            path = "."
        path = fsdecode(fspath(path))
        if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        return realpath(path)

    def check(path, dir_fd, access, event):
        if isinstance(path, int):  # an open file descriptor
            return
        where = resolve(path, dir_fd)
        roots = readable if access == "r" else writable
        if not inside(where, roots):
            verb = {"r": "reading", "w": "writing", "cd": "changing directory to"}[access]
            raise PermissionError(f"sandbox: {verb} {where} is not allowed ({event}); "
                                  f"only the working folder {WORKDIR} is")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(flags, int) and flags & WRITE_FLAGS or mode and any(c in mode for c in "wax+"):
                check(path, None, "w", event)
            else:
                check(path, None, "r", event)
            return
        spec = PATHS.get(event)
        if spec is not None:
            for index, fd_index, access in spec:
                if index < len(args):
                    dir_fd = args[fd_index] if fd_index is not None and fd_index < len(args) else None
                    check(args[index], dir_fd, access, event)
            return
        if event in REFUSED or event.startswith(refused_prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


class Interrupted(BaseException):
    """Raised into user code by the timeout alarm (a BaseException: ``except Exception`` misses it)."""


class Capture(io.TextIOBase):
    """A stdout that keeps the first and the last ``limit`` characters written."""

    encoding, errors = "utf-8", "strict"  # what libraries look at to choose their characters

    def __init__(self, limit):
        self.limit, self.head, self.head_len, self.tail, self.total = limit, [], 0, "", 0

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.total += len(text)
        if self.head_len < self.limit:
            piece = text[: self.limit - self.head_len]
            self.head.append(piece)
            self.head_len += len(piece)
        self.tail = (self.tail + text[-self.limit:])[-self.limit:]
        return len(text)

    def text(self):
        return cut("".join(self.head), self.tail, self.total, self.limit)


def cut(head, tail, total, limit):
    if total <= limit:
        return head
    keep_head = limit // 2
    keep_tail = limit - keep_head
    head, tail = head[:keep_head], tail[-keep_tail:] if keep_tail else ""
    return head + CONFIG["cut_mark"].format(n=total - len(head) - len(tail)) + tail


def error_line(error):
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error.msg} (line {error.lineno})"
    lines = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def names_in(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= names_in(const)
    return names


class Worker:
    """The code's namespace, and the runner of its cells."""

    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        if CONFIG["preload"]:
            self.namespace.update(CHEAP)
        self.loaded = set()
        self.armed = False
        signal.signal(signal.SIGALRM, self.on_alarm)

    def on_alarm(self, signum, frame):
        if self.armed:
            raise Interrupted

    def load_heavy(self, names):
        """Import numpy or sympy the first time a cell names it (0.1-0.3 s each, once)."""
        for module in sorted({HEAVY[name] for name in names if name in HEAVY} - self.loaded):
            try:
                value = __import__(module)
            except Exception:  # not installed, or unusable under the limits
                value = None
            self.loaded.add(module)
            if value is not None:
                for name, target in HEAVY.items():
                    if target == module:
                        self.namespace.setdefault(name, value)

    def run(self, source):
        out = Capture(CONFIG["max_output"])
        status, text = "ok", None
        try:
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, CONFIG["timeout"])
            try:
                tree = ast.parse(source, "<cell>")
                last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
                body = compile(tree, "<cell>", "exec")
                tail = compile(ast.Expression(last.value), "<cell>", "eval") if last else None
                if CONFIG["preload"]:
                    names = names_in(body) | (names_in(tail) if tail else set())
                    self.load_heavy({name.split(".")[0] for name in names})
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                    exec(body, self.namespace)
                    if tail is not None:
                        value = eval(tail, self.namespace)
                        if value is not None and out.total == 0:
                            out.write(repr(value))
            finally:
                self.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Interrupted:
            status, text = "timeout", f"TimeoutError: the code ran longer than {CONFIG['timeout']:g} s and was stopped"
        except SystemExit as stop:
            if stop.code not in (None, 0):
                status, text = "error", error_line(stop)
        except BaseException as error:
            status, text = "error", error_line(error)
        if text is None:
            return {"status": status, "output": out.text()}
        return {"status": status, "output": cut(text, text, len(text), CONFIG["max_output"])}


def send(fd, message):
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def main():
    reader, fd_out = take_protocol_fds()
    read_roots = python_roots()
    active = {"rlimits": True, "nproc": set_limits()}
    active["network_namespace"] = not CONFIG["network"] and private_network()
    active["landlock"] = landlock(read_roots)
    active["seccomp"] = seccomp()
    refuse_fork_exec()
    worker = Worker()
    if CONFIG["audit_hook"]:
        install_audit_hook(read_roots)
    active["audit_hook"] = CONFIG["audit_hook"]
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # stderr was a pipe for start-up errors only
    os.close(null)
    globals().pop("LIBC")  # no ready-made libc functions for the code to find
    send(fd_out, {"hello": os.getpid(), "protections": active})
    for line in reader:
        request = json.loads(line)
        reply = worker.run(request["code"])
        reply["id"] = request["id"]
        send(fd_out, reply)


main()
'''


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
        self.workdir = Path(tempfile.mkdtemp(prefix="aimo-sandbox-")).resolve()
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
        config = {"timeout": self.limits.timeout, "cpu_seconds": self.limits.cpu_seconds,
                  "memory_mb": self.limits.memory_mb, "max_output": self.limits.max_output,
                  "max_processes": self.limits.max_processes, "file_mb": self.limits.file_mb,
                  "network": self.limits.network, "preload": self.preload, "audit_hook": self.audit_hook,
                  "cut_mark": OUTPUT_CUT_MARK}
        workdir = str(self.workdir)
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": workdir,
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMEXPR_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _WORKER_SOURCE, json.dumps(config)],
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


@dataclass
class _Lane:
    """The calls of one key: its Sandbox and the calls waiting for it, run in order."""

    sandbox: Sandbox | None = None
    waiting: deque = field(default_factory=deque)  # (code, Future) pairs
    scheduled: bool = False  # a step of this lane is queued or running on the executor
    released: bool = False


class SandboxPool:
    """Persistent Sandboxes keyed by sample, whose calls run on background threads.

    ``submit`` returns at once with a Future. Calls for one key run in order on
    that key's Sandbox (created at its first call); calls for different keys run
    at the same time, at most ``workers`` at once.
    """

    def __init__(self, limits: SandboxLimits = DEFAULT_LIMITS, *, workers: int | None = None,
                 preload: bool = True) -> None:
        """``workers``: calls running at once (default: the CPU count, at least 2)."""
        self.limits = limits
        self.preload = preload
        self.workers = workers or max(2, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox")
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, key: Hashable, code: str) -> Future[ToolResult]:
        """Queue ``code`` for sample ``key``; the Future gives its ToolResult."""
        future: Future[ToolResult] = Future()
        with self._lock:
            if self._closed:
                raise SandboxError("This SandboxPool is closed; create a new one.")
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            lane.waiting.append((code, future))
            if not lane.scheduled:
                lane.scheduled = True
                self._executor.submit(self._step, lane)
        return future

    def release(self, key: Hashable) -> None:
        """The sample is done: cancel its waiting calls, kill a running one, close its Sandbox."""
        with self._lock:
            lane = self._lanes.pop(key, None)
            if lane is None:
                return
            lane.released = True
            waiting = list(lane.waiting)
            lane.waiting.clear()
            sandbox = lane.sandbox
        for _, future in waiting:
            future.cancel()
        if sandbox is not None:
            sandbox.close()

    @property
    def keys(self) -> list[Hashable]:
        """Keys not yet released."""
        with self._lock:
            return list(self._lanes)

    def close(self) -> None:
        """Release every key and stop the threads."""
        with self._lock:
            self._closed = True
            keys = list(self._lanes)
        for key in keys:
            self.release(key)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _step(self, lane: _Lane) -> None:
        """Run the lane's oldest waiting call, then queue the next one (fair among keys)."""
        with self._lock:
            item = lane.waiting.popleft() if lane.waiting and not lane.released else None
        if item is not None:
            code, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._sandbox_of(lane).run(code))
                except BaseException as error:  # noqa: BLE001 - the caller sees it through the Future
                    future.set_exception(error)
        with self._lock:
            again = bool(lane.waiting) and not lane.released
            lane.scheduled = again
            if again:
                try:
                    self._executor.submit(self._step, lane)
                except RuntimeError:  # shut down meanwhile
                    lane.scheduled = False
            released, sandbox = lane.released, lane.sandbox
        if released and sandbox is not None:
            sandbox.close()

    def _sandbox_of(self, lane: _Lane) -> Sandbox:
        if lane.sandbox is None:
            sandbox = Sandbox(self.limits, preload=self.preload)
            with self._lock:
                lane.sandbox = sandbox
                released = lane.released
            if released:
                sandbox.close()
                raise SandboxError("The sample was released before its code ran.")
        return lane.sandbox
