"""The sandbox that runs model-written Python: results, limits, walls, pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from aimo_gguf.sandbox import (
    OUTPUT_CUT_MARK,
    Protections,
    Sandbox,
    SandboxError,
    SandboxLimits,
    SandboxPool,
    ToolResult,
    protections,
)

FAST = SandboxLimits(timeout=2.0)


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def wait_gone(pids: set[int], timeout: float = 5.0) -> set[int]:
    """The pids among ``pids`` still alive (zombies count as gone) after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.02)
    return alive


@pytest.fixture(scope="module")
def box():
    """One preloaded sandbox shared by the tests that leave it usable."""
    with Sandbox(FAST) as sandbox:
        yield sandbox


@pytest.fixture
def fresh():
    with Sandbox(FAST, preload=False) as sandbox:
        yield sandbox


def test_print_output(box: Sandbox) -> None:
    result = box.run("print('hello', 6 * 7)")
    assert result == ToolResult(True, "hello 42\n", "ok", result.seconds)
    assert 0 < result.seconds < 1


def test_state_persists_between_calls(box: Sandbox) -> None:
    box.run("counter = 1\ndef bump():\n    global counter\n    counter += 1")
    box.run("bump()")
    assert box.run("print(counter)").output == "2\n"


@pytest.mark.parametrize(
    ("code", "output"),
    [
        ("a = 3\na * 2", "6"),
        ("'x' + 'y'", "'xy'"),
        ("print('shown')\n5", "shown\n"),  # something was printed: the value is not shown
        ("None", ""),
        ("a = 3", ""),
        ("", ""),
        ("Fraction(1, 3) + Fraction(1, 6)", "Fraction(1, 2)"),
        ("math.comb(10, 3), list(itertools.permutations(range(2)))", "(120, [(0, 1), (1, 0)])"),
    ],
)
def test_trailing_expression(box: Sandbox, code: str, output: str) -> None:
    result = box.run(code)
    assert (result.ok, result.output) == (True, output)


@pytest.mark.parametrize(
    ("code", "line"),
    [
        ("1 / 0", "ZeroDivisionError: division by zero"),
        ("print('lost')\nundefined_name_zz", "NameError: name 'undefined_name_zz' is not defined"),
        ("def f(:\n    pass", "SyntaxError: invalid syntax (line 1)"),
        ("{}['k']", "KeyError: 'k'"),
        ("raise ValueError('bad\\nthing')", "thing"),
        ("import sys; sys.exit(3)", "SystemExit: 3"),
    ],
)
def test_error_gives_last_line(box: Sandbox, code: str, line: str) -> None:
    result = box.run(code)
    assert (result.ok, result.status, result.output) == (False, "error", line)


def test_exit_zero_is_ok(box: Sandbox) -> None:
    assert box.run("print('bye'); raise SystemExit").output == "bye\n"


def test_output_cut_keeps_head_and_tail() -> None:
    with Sandbox(SandboxLimits(max_output=100), preload=False) as sandbox:
        result = sandbox.run("print('A' * 5000 + 'Z' * 5000)")
    assert result.ok
    assert result.output.startswith("A" * 50) and result.output.endswith("Z" * 49 + "\n")
    assert OUTPUT_CUT_MARK.format(n=10001 - 100) in result.output
    assert len(result.output) < 100 + len(OUTPUT_CUT_MARK) + 10


def test_preloaded_heavy_modules(box: Sandbox) -> None:
    result = box.run("sympy.factorint(2**32 + 1), int(np.arange(5).sum()), sp is sympy")
    assert result.output == "({641: 1, 6700417: 1}, 10, True)"


def test_heavy_modules_load_only_when_named() -> None:
    with Sandbox(FAST) as sandbox:
        assert sandbox.run("import sys\n'sympy' in sys.modules, 'numpy' in sys.modules").output == "(False, False)"
        assert sandbox.run("sp.Rational(1, 3) * 3").output == "1"
        assert sandbox.run("'sympy' in sys.modules, 'np' in dir()").output == "(True, False)"


def test_bare_namespace_without_preload(fresh: Sandbox) -> None:
    assert fresh.run("math").output == "NameError: name 'math' is not defined"
    assert fresh.run("import math; math.isqrt(99)").output == "9"


def test_files_inside_the_working_folder(box: Sandbox) -> None:
    code = ("import os, tempfile\nopen('note.txt', 'w').write('hi')\nos.mkdir('sub')\n"
            "os.rename('note.txt', 'sub/n.txt')\nprint(open('sub/n.txt').read(), tempfile.gettempdir() == os.getcwd())")
    assert box.run(code).output == "hi True\n"
    assert (box.workdir / "sub" / "n.txt").read_text() == "hi"


def test_endless_loop_is_interrupted_and_state_kept() -> None:
    with Sandbox(SandboxLimits(timeout=0.5), preload=False) as sandbox:
        sandbox.run("kept = 7")
        pid = sandbox.pid
        result = sandbox.run("while True:\n    try:\n        pass\n    except Exception:\n        pass")
        assert (result.ok, result.status) == (False, "timeout")
        assert result.output == "TimeoutError: the code ran longer than 0.5 s and was stopped"
        assert 0.5 <= result.seconds < 1.0
        assert sandbox.run("kept").output == "7"
        assert sandbox.pid == pid


def test_code_that_will_not_stop_is_killed_and_worker_replaced() -> None:
    # Code that ignores the interrupt (here: the alarm signal) is killed; a fresh
    # worker answers the next call, and the variables of the old one are gone.
    with Sandbox(SandboxLimits(timeout=0.5), preload=False) as sandbox:
        sandbox.run("kept = 7")
        pid = sandbox.pid
        result = sandbox.run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass")
        assert (result.ok, result.status) == (False, "timeout")
        assert "was killed" in result.output and "restarted" in result.output
        assert result.seconds < 2.0
        assert not wait_gone({pid})
        assert sandbox.run("print('again')").output == "again\n"
        assert sandbox.pid != pid
        assert sandbox.run("kept").output == "NameError: name 'kept' is not defined"


def test_huge_allocation_raises_memory_error(box: Sandbox) -> None:
    box.run("survivor = 1")
    result = box.run("x = bytearray(10**10)")
    assert (result.ok, result.status, result.output) == (False, "error", "MemoryError")
    assert box.run("survivor").output == "1"


def test_dead_worker_is_replaced(fresh: Sandbox) -> None:
    result = fresh.run("import os\nos._exit(3)")
    assert (result.ok, result.status) == (False, "crashed")
    assert "exited with code 3" in result.output
    assert fresh.run("1 + 1").output == "2"


def test_cpu_limit_kills_the_worker() -> None:
    with Sandbox(SandboxLimits(timeout=5.0, cpu_seconds=1), preload=False) as sandbox:
        result = sandbox.run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass")
        assert (result.status, result.seconds < 3) == ("crashed", True)
        assert "CPU time (1 s)" in result.output
        assert sandbox.run("'back'").output == "'back'"


REFUSED = [
    "open('/tmp/x_outside_sandbox', 'w')",
    "import os\nopen(os.path.expanduser('~/evil_sandbox'), 'w')",
    "import os\nopen(os.path.expanduser('~/.bashrc')).read()",
    f"open({str(Path(__file__).resolve())!r}).read()",
    "import os\nos.listdir(os.path.expanduser('~'))",
    "import os\nos.remove('/tmp')",
    "import os\nos.chdir('/')",
    "import socket\nsocket.socket()",
    "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "import os\nos.system('touch /tmp/x_outside_sandbox')",
    "import subprocess\nsubprocess.run(['touch', '/tmp/x_outside_sandbox'])",
    "import os\nos.popen('touch /tmp/x_outside_sandbox').read()",
    "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch /tmp/x_outside_sandbox'])",
    "import os\nos.fork()",
    "import os\nos.kill(os.getppid(), 0)",
    "import ctypes\nctypes.CDLL(None).system(b'touch /tmp/x_outside_sandbox')",
    "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    "import _posixsubprocess\n_posixsubprocess.fork_exec()",
]


@pytest.mark.parametrize("code", REFUSED)
def test_refused(box: Sandbox, code: str) -> None:
    result = box.run(code)
    assert (result.ok, result.status) == (False, "error"), result
    assert result.output.startswith("PermissionError: "), result.output
    assert not Path("/tmp/x_outside_sandbox").exists()
    assert not Path("~/evil_sandbox").expanduser().exists()


KERNEL_REFUSED = [
    ("landlock", "open('/tmp/x_outside_sandbox', 'w')"),
    ("landlock", "import os\nopen(os.path.expanduser('~/.bashrc')).read()"),
    ("landlock", "import os\nos.listdir(os.path.expanduser('~'))"),
    ("seccomp", "import os\nos.fork()"),
    ("seccomp", "import os\nos.setsid()"),
    ("seccomp", "import os\nos.kill(os.getppid(), 0)"),
    ("seccomp", "import socket\nsocket.socket()"),
    ("seccomp", "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))"),
]


# Scheduling and priority: on any process but the worker (the run is its parent; OTHER a bystander process of
# the test's), and any raise of its own priority, whichever call does it. The ctypes cases reach syscalls Python
# does not wrap.
SYSCALL = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
RAISE_ERRNO = "\nif r != 0: raise OSError(ctypes.get_errno(), 'refused')"
SCHEDULING_REFUSED = [
    "import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
    "import os\nos.setpriority(os.PRIO_PROCESS, OTHER, 19)",
    "import os\nos.setpriority(os.PRIO_PGRP, 0, 19)",
    "import os\nos.setpriority(os.PRIO_USER, 0, 19)",
    "import os\nos.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - 1)",
    "import os\nos.nice(-20)",
    "import os\nos.nice(-1)",
    "import os\nos.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))",
    "import os\nos.sched_setscheduler(OTHER, os.SCHED_BATCH, os.sched_param(0))",
    "import os\nos.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))",
    "import os\nos.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))",
    "import os\nos.sched_setscheduler(0, os.SCHED_FIFO | 0x40000000, os.sched_param(1))",  # RESET_ON_FORK
    "import os\nos.sched_setparam(os.getppid(), os.sched_param(0))",
    "import os\nos.sched_setparam(OTHER, os.sched_param(0))",
    "import os\nos.sched_setaffinity(os.getppid(), {0})",
    "import os\nos.sched_setaffinity(OTHER, {0})",
    SYSCALL + "attr = (ctypes.c_uint32 * 14)(56, 0, 0, (-20) & 0xFFFFFFFF)\n"
              "r = libc.syscall(314, 0, attr, 0)" + RAISE_ERRNO,  # sched_setattr: nice -20 on itself
    SYSCALL + "attr = (ctypes.c_uint32 * 14)(56, 5)\nr = libc.syscall(314, os.getppid(), attr, 0)" + RAISE_ERRNO,
    SYSCALL + "r = libc.syscall(251, 1, os.getppid(), 3 << 13)" + RAISE_ERRNO,  # ioprio_set on the run
    SYSCALL + "r = libc.syscall(251, 1, 0, (1 << 13) | 0)" + RAISE_ERRNO,  # a real-time I/O class on itself
    SYSCALL + "r = libc.syscall(251, 1, 0, (2 << 13) | 0)" + RAISE_ERRNO,  # the best-effort class's top
    SYSCALL + "r = libc.syscall(251, 2, 0, 3 << 13)" + RAISE_ERRNO,  # its process group
    SYSCALL + "r = libc.syscall(256, os.getppid(), 64, None, None)" + RAISE_ERRNO,  # migrate_pages
    SYSCALL + "r = libc.syscall(251, 1, OTHER, 3 << 13)" + RAISE_ERRNO,
    SYSCALL + "r = libc.syscall(279, os.getppid(), 0, None, None, None, 0)" + RAISE_ERRNO,  # move_pages
]
SCHEDULING_ALLOWED = [  # the worker may still lower its own priority
    "import os\nos.nice(5)",
    "import os\nos.setpriority(os.PRIO_PROCESS, 0, 19)\nos.setpriority(os.PRIO_PROCESS, os.getpid(), 19)",
    "import os\nos.sched_setaffinity(0, os.sched_getaffinity(0))",
    "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))",
    "import os\nos.sched_setscheduler(os.getpid(), os.SCHED_BATCH, os.sched_param(0))",
    "import os\nos.sched_setparam(0, os.sched_param(0))",
    SYSCALL + "r = libc.syscall(251, 1, 0, 3 << 13)" + RAISE_ERRNO,  # ioprio_set: the idle class on itself
    SYSCALL + "r = libc.syscall(279, 0, 0, None, None, None, 0)" + RAISE_ERRNO,  # move_pages of nothing, itself
]
KERNEL_REFUSED += [("seccomp", code) for code in SCHEDULING_REFUSED]


@pytest.fixture(scope="module")
def bystander():
    """A process that is neither the run nor the worker: its pid replaces OTHER in the cases."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def scheduling_state(*pids: int) -> tuple:
    """What a worker must never change in the run (0: this process) or another: priority, CPUs, policies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return tuple((os.getpriority(os.PRIO_PROCESS, pid), os.sched_getaffinity(pid), os.sched_getscheduler(pid),
                  libc.syscall(252, 1, pid)) for pid in (0, *pids))  # 252: ioprio_get(IOPRIO_WHO_PROCESS)


@pytest.fixture(scope="module")
def kernel_only():
    """A sandbox without the audit hook: only the kernel walls stand."""
    with Sandbox(FAST, preload=False, audit_hook=False) as sandbox:
        yield sandbox


@pytest.mark.parametrize(("wall", "code"), KERNEL_REFUSED)
def test_kernel_walls_without_audit_hook(kernel_only: Sandbox, bystander: int, wall: str, code: str) -> None:
    if not getattr(kernel_only.protections, wall):
        pytest.skip(f"{wall} is not available on this machine")
    before = scheduling_state(bystander)
    result = kernel_only.run(code.replace("OTHER", str(bystander)))
    assert (result.ok, result.status) == (False, "error"), result
    assert "PermissionError" in result.output or "ValueError: not allowed" in result.output
    assert not Path("/tmp/x_outside_sandbox").exists()
    assert scheduling_state(bystander) == before


@pytest.mark.parametrize("code", [c for c in SCHEDULING_REFUSED if "ctypes" not in c])
def test_scheduling_of_others_is_refused_with_the_audit_hook_too(box: Sandbox, bystander: int, code: str) -> None:
    if not box.protections.seccomp:
        pytest.skip("seccomp is not available on this machine")
    before = scheduling_state(bystander)
    result = box.run(code.replace("OTHER", str(bystander)))
    assert (result.ok, result.output) == (False, "PermissionError: [Errno 1] Operation not permitted"), result
    assert scheduling_state(bystander) == before


@pytest.mark.parametrize("code", SCHEDULING_ALLOWED)
def test_a_worker_may_still_lower_its_own_priority(code: str) -> None:
    with Sandbox(FAST, preload=False, audit_hook=False) as sandbox:
        before = scheduling_state()
        result = sandbox.run(code)
        assert result.ok, result
        assert scheduling_state() == before


def test_kernel_walls_stop_process_creation_through_libc(kernel_only: Sandbox) -> None:
    if not kernel_only.protections.seccomp:
        pytest.skip("seccomp is not available on this machine")
    result = kernel_only.run("import ctypes\nctypes.CDLL(None).system(b'touch /tmp/x_outside_sandbox')")
    assert result.ok and result.output != "0"
    assert not Path("/tmp/x_outside_sandbox").exists()


def test_fork_bomb_is_contained(fresh: Sandbox) -> None:
    before = children()
    result = fresh.run("import os\nwhile True:\n    os.fork()")
    assert (result.ok, result.output) == (False, "PermissionError: sandbox: os.fork is not allowed")
    assert children() == before
    assert fresh.run("'alive'").output == "'alive'"


def test_fork_bomb_is_contained_by_the_kernel_alone(kernel_only: Sandbox) -> None:
    if not kernel_only.protections.seccomp:
        pytest.skip("seccomp is not available on this machine")
    before = children()
    result = kernel_only.run("import os\nwhile True:\n    os.fork()")
    assert (result.ok, result.output) == (False, "PermissionError: [Errno 1] Operation not permitted")
    assert children() == before


def test_network_can_be_allowed() -> None:
    with Sandbox(SandboxLimits(network=True), preload=False) as sandbox:
        result = sandbox.run("import socket\ns = socket.socket()\ns.close()\n'made'")
        assert result.output == "'made'"
        assert not sandbox.protections.network_namespace


def test_protections_on_this_machine() -> None:
    found = protections()
    assert isinstance(found, Protections)
    assert found.audit_hook and found.rlimits
    assert set(found.active()) >= {"audit_hook", "rlimits"}
    if os.getuid() == 0:
        assert not found.nproc  # the kernel exempts root from RLIMIT_NPROC


def test_close_kills_worker_and_removes_folder() -> None:
    before = children()
    sandbox = Sandbox(FAST)
    workdir, pid = sandbox.workdir, sandbox.pid
    assert workdir.is_dir() and pid in children()
    sandbox.run("open('f.txt', 'w').write('x')")
    sandbox.close()
    assert not workdir.exists()
    assert not wait_gone({pid})
    assert children() <= before
    with pytest.raises(SandboxError):
        sandbox.run("1")
    sandbox.close()  # twice is fine


def test_pool_runs_keys_concurrently() -> None:
    with SandboxPool(FAST, workers=2, preload=False) as pool:
        started = time.monotonic()
        futures = [pool.submit(key, "import time\ntime.sleep(1)\nprint('done')") for key in ("a", "b")]
        results = [future.result(timeout=10) for future in futures]
        elapsed = time.monotonic() - started
    assert [r.output for r in results] == ["done\n", "done\n"]
    assert elapsed < 1.8


def test_pool_same_key_in_order_with_state() -> None:
    with SandboxPool(FAST, workers=4, preload=False) as pool:
        futures = [pool.submit("k", "seen = []")]
        futures += [pool.submit("k", f"seen.append({i})") for i in range(20)]
        futures.append(pool.submit("k", "seen"))
        other = pool.submit("other", "seen")
        assert futures[-1].result(timeout=10).output == repr(list(range(20)))
        assert other.result(timeout=10).output == "NameError: name 'seen' is not defined"


def test_pool_release_closes_the_worker() -> None:
    before = children()
    with SandboxPool(FAST, preload=False) as pool:
        pid_a = int(pool.submit("a", "import os\nx = 1\nos.getpid()").result(timeout=10).output)
        pid_b = int(pool.submit("b", "import os\nx = 2\nos.getpid()").result(timeout=10).output)
        assert children() - before == {pid_a, pid_b}
        pool.release("a")
        assert pool.keys == ["b"]
        assert not wait_gone({pid_a})
        assert psutil.pid_exists(pid_b)
        assert pool.submit("a", "x").result(timeout=10).output == "NameError: name 'x' is not defined"
        assert pool.submit("b", "x").result(timeout=10).output == "2"
    assert not wait_gone(children() - before)
    with pytest.raises(SandboxError):
        pool.submit("a", "1")


def test_pool_release_stops_a_running_call() -> None:
    before = children()
    with SandboxPool(SandboxLimits(timeout=30), preload=False) as pool:
        pool.submit("a", "1").result(timeout=10)
        running = pool.submit("a", "while True: pass")
        waiting = pool.submit("a", "print('never')")
        time.sleep(0.2)
        started = time.monotonic()
        pool.release("a")
        assert running.result(timeout=5).status == "crashed"
        assert waiting.cancelled()
        assert time.monotonic() - started < 2
    assert not wait_gone(children() - before)


def test_release_returns_at_once_and_tears_down_on_the_reaper_thread(monkeypatch) -> None:
    closed_on = []
    real_close = Sandbox.close

    def slow_close(self):
        closed_on.append(threading.current_thread().name)
        time.sleep(0.5)  # a kill, a wait and an rmtree that take long
        real_close(self)

    monkeypatch.setattr(Sandbox, "close", slow_close)
    with SandboxPool(FAST, preload=False) as pool:
        pool.submit("a", "1").result(timeout=10)
        started = time.monotonic()
        pool.release("a")
        assert time.monotonic() - started < 0.1  # the decode thread does not wait
    assert closed_on and all(name.startswith("sandbox-reaper") for name in closed_on)


def test_folders_left_by_a_killed_run_are_removed_by_the_next(tmp_path, monkeypatch) -> None:
    """SIGKILL of a --tir run leaves its workers' folders; the next pool removes those whose owner is dead,
    and leaves a live owner's alone."""
    script = ("import time; from aimo_gguf.sandbox import SandboxPool, SandboxLimits; "
              "pool = SandboxPool(SandboxLimits(timeout=5), preload=False); "
              "pool.submit('k', 'open(\"mark\", \"w\").write(\"x\")').result(timeout=20); "
              "print('ready', flush=True); time.sleep(60)")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    alive = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        assert killed.stdout.readline().strip() == "ready" and alive.stdout.readline().strip() == "ready"
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        left = {p.name for p in tmp_path.glob("aimo-sandbox-*")}
        assert len(left) == 2  # the killed run's folder outlived it
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        with SandboxPool(FAST, preload=False):
            pass
        remaining = [p.name for p in tmp_path.glob("aimo-sandbox-*")]
        assert remaining == [f for f in left if f.startswith(f"aimo-sandbox-{alive.pid}-")]
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_no_worker_outlives_a_run_killed_with_sigkill() -> None:
    """A run SIGKILLed with a worker asleep in a call (its timeout alarm ignored), one spinning, and one
    started from the run's main thread rather than the pool's: the kernel kills each with the run."""
    script = (
        "from aimo_gguf.sandbox import Sandbox, SandboxLimits, SandboxPool\n"
        "long = SandboxLimits(timeout=600, cpu_seconds=600)\n"
        "pool = SandboxPool(long, preload=False)\n"
        "pids = [pool.submit(k, 'import os\\nos.getpid()').result(timeout=30).output for k in 'ab']\n"
        "pool.submit('a', 'import signal, time\\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\\ntime.sleep(600)')\n"
        "pool.submit('b', 'while True: pass')\n"
        "direct = Sandbox(long, preload=False)\n"
        "print(*pids, direct.pid, flush=True)\n"
        "direct.run('import time\\ntime.sleep(600)')\n")
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids: set[int] = set()
    try:
        pids = set(map(int, run.stdout.readline().split()))
        assert len(pids) == 3
        time.sleep(0.5)  # the three calls are under way
        run.kill()
        run.wait()
        assert not wait_gone(pids, timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        _kill_all(pids)


def test_a_worker_whose_run_ended_while_it_started_exits_at_once(tmp_path) -> None:
    """The start-up race: the run is gone before the worker could ask to die with it. Its stdin is held
    open here, so only the parent check (not an end of input) can end it."""
    from aimo_gguf.sandbox.process import WORKER, worker_config

    read, write = os.pipe()
    launcher = (
        "import json, os, subprocess, sys\n"
        "config = json.loads(sys.argv[1])\n"
        "config['parent'] = os.getpid()\n"
        f"proc = subprocess.Popen([sys.executable, '-I', '-B', {str(WORKER)!r}, json.dumps(config)], stdin={read},\n"
        "                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,\n"
        f"                        pass_fds=({read},), cwd=sys.argv[2])\n"
        "print(proc.pid, flush=True)\n"
        "os._exit(0)\n")
    config = worker_config(FAST, preload=False, audit_hook=True)
    pids: set[int] = set()
    try:
        done = subprocess.run([sys.executable, "-c", launcher, json.dumps(config), str(tmp_path)], pass_fds=(read,),
                              capture_output=True, text=True, timeout=60)
        pids = {int(done.stdout)}
        assert not wait_gone(pids, timeout=10)
    finally:
        os.close(read)
        os.close(write)
        _kill_all(pids)
