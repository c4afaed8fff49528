"""The sandbox worker: a program of the standard library alone, run as
``python -I -B worker.py CONFIG_JSON`` by ``aimo_gguf.sandbox.process.Sandbox``.

It puts up its walls (``walls.py`` beside it: resource limits, a private network
namespace, Landlock, seccomp, an audit hook), says hello with the walls it got, then answers one
JSON request per line (``{"id": n, "code": "..."}``) with one JSON reply
(``{"id": n, "status": ..., "output": ...}``) on its own copies of stdin and
stdout. Importing this module does nothing: ``main()`` runs only as a program.
It never imports aimo_gguf: ``-I`` keeps the package off its path anyway.
"""

import ast
import builtins
import collections
import contextlib
import ctypes
import fractions
import functools
import io
import itertools
import json
import math
import os
import signal
import sys
import traceback
import types
from fractions import Fraction

# The walls are the module beside this file; -I keeps this folder off sys.path, so it is there for them alone.
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
try:
    import walls
finally:
    del sys.path[0]

CONFIG: dict = {}  # the parent's settings (timeout, limits, preload, ...), filled by main()
WORKDIR = ""  # the private working folder: the current directory at start
LIBC = None  # libc, for the walls only; dropped before any code runs
DEFAULT_CUT_MARK = "\n... [output cut: {n} characters] ...\n"
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


def cut(head, tail, total, limit, mark=None):
    """``head`` and ``tail`` of a text of ``total`` characters, joined by a cut mark once it is
    longer than ``limit``; at most ``limit`` characters of the text are kept."""
    if total <= limit:
        return head
    keep_head = limit // 2
    keep_tail = limit - keep_head
    head, tail = head[:keep_head], tail[-keep_tail:] if keep_tail else ""
    mark = mark if mark is not None else CONFIG.get("cut_mark", DEFAULT_CUT_MARK)
    return head + mark.format(n=total - len(head) - len(tail)) + tail


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


def main(argv=None):
    global LIBC, WORKDIR
    argv = sys.argv if argv is None else argv
    CONFIG.update(json.loads(argv[1]))
    sys.argv = [""]
    WORKDIR = os.path.realpath(os.getcwd())
    LIBC = ctypes.CDLL(None, use_errno=True)
    LIBC.syscall.restype = ctypes.c_long
    network = CONFIG["network"]
    dies_with_parent = walls.die_with_parent(LIBC, CONFIG["parent"])
    reader, fd_out = take_protocol_fds()
    read_roots = walls.python_roots()
    active = {"rlimits": True, "nproc": walls.set_limits(CONFIG), "dies_with_parent": dies_with_parent}
    active["network_namespace"] = not network and walls.private_network(LIBC)
    active["landlock"] = walls.landlock(LIBC, read_roots, workdir=WORKDIR, network=network)
    active["seccomp"] = walls.seccomp(LIBC, network=network)
    walls.refuse_fork_exec()
    worker = Worker()
    if CONFIG["audit_hook"]:
        walls.install_audit_hook(read_roots, workdir=WORKDIR, network=network)
    active["audit_hook"] = CONFIG["audit_hook"]
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # stderr was a pipe for start-up errors only
    os.close(null)
    LIBC = None  # no ready-made libc functions for the code to find
    send(fd_out, {"hello": os.getpid(), "protections": active})
    for line in reader:
        request = json.loads(line)
        reply = worker.run(request["code"])
        reply["id"] = request["id"]
        send(fd_out, reply)


if __name__ == "__main__":
    main()
