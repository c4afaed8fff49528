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
- death with the run (Linux): the kernel SIGKILLs a worker when the run that
  started it ends, even by SIGKILL (``PR_SET_PDEATHSIG``; a worker whose run
  ended before it could ask exits at once), so no sleeping or spinning worker
  outlives it;
- a private network namespace with no interfaces (needs CAP_SYS_ADMIN);
- Landlock (Linux >= 5.13): the kernel itself allows reading only Python's
  install, system libraries and the working folder, writing only the working
  folder; from ABI 4 no TCP bind/connect, from ABI 6 no signals to processes
  outside the sandbox;
- seccomp (Linux x86-64): the kernel refuses fork, vfork, non-thread clone,
  execve, sockets, ptrace, kill of any other process, raising limits, mounts,
  namespaces, io_uring, setsid and similar; and every scheduling or priority
  change (``setpriority``/``nice``, ``sched_setscheduler``, ``sched_setparam``,
  ``sched_setaffinity``, ``ioprio_set``, ``migrate_pages``, ``move_pages``) of
  any process but the worker itself, any raise of its priority above where it
  started, real-time policies, and ``sched_setattr`` (whose arguments the
  filter cannot read). Lowering its own priority stays allowed.

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

The parts: ``worker`` (the program the worker process runs: standard library
only), ``process`` (``Sandbox``: one worker process, its folder and its
protocol), ``pool`` (``SandboxPool``: workers keyed by sample, their calls and
their teardown on background threads, never on the caller's).
"""

from __future__ import annotations

from .pool import SandboxPool
from .process import (
    DEFAULT_LIMITS,
    KILL_GRACE_SECONDS,
    OUTPUT_CUT_MARK,
    Protections,
    Sandbox,
    SandboxError,
    SandboxLimits,
    ToolResult,
    protections,
    remove_stale_folders,
)

__all__ = [
    "DEFAULT_LIMITS", "KILL_GRACE_SECONDS", "OUTPUT_CUT_MARK", "Protections", "Sandbox", "SandboxError",
    "SandboxLimits", "SandboxPool", "ToolResult", "protections", "remove_stale_folders",
]
