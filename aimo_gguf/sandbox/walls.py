"""The sandbox worker's walls: resource limits, a private network namespace, Landlock, seccomp and an
audit hook, put up by the worker program (``aimo_gguf.sandbox.worker``) before any code runs.

Like the worker, a module of the standard library alone, loaded by path (the
worker is run with ``python -I``). Nothing here keeps libc: every function that
needs it is handed it, so the code the worker runs finds none here.
"""

import ctypes
import os
import platform
import resource
import signal
import site
import stat
import struct
import sys


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


def set_limits(config):
    """Resource limits (``config``: the worker's settings); returns whether RLIMIT_NPROC is in force (never
    for root)."""
    mib = 2**20
    lower_limit(resource.RLIMIT_AS, config["memory_mb"] * mib)
    lower_limit(resource.RLIMIT_CPU, config["cpu_seconds"], config["cpu_seconds"] + 1)
    lower_limit(resource.RLIMIT_FSIZE, config["file_mb"] * mib)
    lower_limit(resource.RLIMIT_CORE, 0)
    lower_limit(resource.RLIMIT_NOFILE, 1024)
    if os.getuid() == 0 or not sys.platform.startswith("linux"):
        return False
    lower_limit(resource.RLIMIT_NPROC, tasks_of_user(os.getuid()) + config["max_processes"])
    return True


def private_network(libc):
    """A new network namespace: no interfaces but a down loopback."""
    return sys.platform.startswith("linux") and libc.unshare(ctypes.c_int(0x40000000)) == 0


def syscall(libc, number, *args):
    return libc.syscall(ctypes.c_long(number), *args)


def python_roots():
    """Folders Python's imports read: its prefixes and site-packages."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.__file__), *site.getsitepackages()}
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return sorted({os.path.realpath(r) for r in roots if os.path.isdir(r)})


SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime",
               "/usr/share/zoneinfo", "/sys/devices/system/cpu")


def landlock(libc, read_roots, *, workdir, network):
    """Kernel file rules: read Python and system libraries, write only ``workdir``. Returns the ABI or 0."""
    if not sys.platform.startswith("linux"):
        return 0
    abi = syscall(libc, 444, None, ctypes.c_size_t(0), ctypes.c_uint(1))
    if abi < 1:
        return 0
    handled = (1 << 13) - 1
    for version, bit in ((2, 13), (3, 14), (5, 15)):  # refer, truncate, ioctl_dev
        if abi >= version:
            handled |= 1 << bit
    net = 0b11 if abi >= 4 and not network else 0  # bind_tcp, connect_tcp
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", handled, net, scoped)[:size], size)
    ruleset = syscall(libc, 444, attr, ctypes.c_size_t(size), ctypes.c_uint(0))
    if ruleset < 0:
        return 0
    read = 1 | 4 | 8  # execute, read_file, read_dir
    file_rights = 1 | 2 | 4 | (1 << 14) | (1 << 15)  # rights that apply to a file, not a folder
    rules = [(path, read) for path in (*read_roots, *SYSTEM_READ)]
    rules += [(workdir, handled), (os.devnull, 2 | 4 | (1 << 15))]
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
                syscall(libc, 445, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint(0))
            finally:
                os.close(fd)
        no_new_privs(libc)
        return abi if syscall(libc, 446, ctypes.c_int(ruleset), ctypes.c_uint(0)) == 0 else 0
    finally:
        os.close(ruleset)


def die_with_parent(libc, parent):
    """SIGKILL this worker when the thread that started it ends (the run, killed even by SIGKILL); at once
    when the run ended before this line (the start-up race: the worker's parent is no longer the run)."""
    if not sys.platform.startswith("linux"):
        return False
    libc.prctl(ctypes.c_int(1), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
               ctypes.c_ulong(0))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    return True


def no_new_privs(libc):
    libc.prctl(ctypes.c_int(38), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


# x86-64 syscall numbers refused with EPERM: processes, exec, tracing, namespaces,
# mounts, modules, keys, io_uring, ids, clocks, device nodes, ...
DENIED = (57, 58, 59, 322, 101, 310, 311, 272, 308, 165, 166, 155, 161, 169, 246, 320, 175, 313, 176,
          321, 298, 250, 248, 249, 160, 425, 426, 427, 304, 303, 323, 434, 424, 438, 129, 297, 200,
          112, 109, 105, 106, 113, 114, 117, 119, 116, 122, 123, 126, 167, 168, 164, 227, 305, 159,
          170, 171, 172, 173, 163, 179, 133, 259, 103, 300, 428, 429, 430, 431, 432, 433, 442, 153,
          134, 212, 180, 314)  # 314: sched_setattr, whose policy and nice hide in memory the filter cannot read
SOCKETS = (41, 53)  # socket, socketpair
CLONE, CLONE3, KILL, TGKILL, PRLIMIT64 = 56, 435, 62, 234, 302
# Scheduling and priority: allowed on the worker itself only, and never to raise its priority.
SETPRIORITY, SCHED_SETPARAM, SCHED_SETSCHEDULER, SCHED_SETAFFINITY = 141, 142, 144, 203
IOPRIO_SET, MIGRATE_PAGES, MOVE_PAGES = 251, 256, 279
PRIO_PROCESS, IOPRIO_WHO_PROCESS = 0, 1
LOWER_POLICIES = (0, 3, 5)  # SCHED_OTHER, SCHED_BATCH, SCHED_IDLE: none outranks a normal process
SCHED_RESET_ON_FORK = 0x40000000
IOPRIO_CLASS_IDLE = 3 << 13  # ioprio_set: only the idle class, the lowest there is


LD, ALU_ADD, ALU_AND, JEQ, JGE, JSET, RET = 0x20, 0x04, 0x54, 0x15, 0x35, 0x45, 0x06
ALLOW, KILL_PROCESS = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | 1, 0x00050000 | 38


def op(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def arg(index):
    """Offset of an argument's low 32 bits in seccomp_data: the kernel reads these int arguments as int."""
    return 16 + 8 * index


def allowed_if(number, *tests):
    """Filter code: syscall ``number`` is allowed when every test holds, else refused with EPERM.
    A test is (argument index, mask or None, accepted values) or (argument index, None, ">=", floor),
    the floor compared as a signed int."""
    body, fixups = [], []  # fixups: (instruction index, "next" or "deny"), resolved below
    for test in tests:
        index, mask = test[0], test[1]
        start = len(body)
        body.append([LD, arg(index), 0, 0])
        if mask is not None:
            body.append([ALU_AND, mask, 0, 0])
        if len(test) == 4:  # signed >=: shift both sides by 2^31, then compare unsigned
            body.append([ALU_ADD, 0x80000000, 0, 0])
            body.append([JGE, test[3] + 0x80000000, 0, "deny"])
        else:
            values = test[2]
            for i, value in enumerate(values):
                last = i == len(values) - 1
                body.append([JEQ, value, 0 if last else "next", "deny" if last else 0])
        fixups.append((start, len(body)))
    deny = len(body) + 1  # body, then RET ALLOW, then RET EPERM
    for start, end in fixups:
        for i in range(start, end):
            for slot in (2, 3):
                target = {"next": end, "deny": deny}.get(body[i][slot])
                if target is not None:
                    body[i][slot] = target - i - 1
    code = [op(*instruction) for instruction in body] + [op(RET, ALLOW), op(RET, EPERM)]
    return [op(LD, 0), op(JEQ, number, 0, len(code))] + code


def scheduling_rules(pid, nice):
    """Priority and scheduling calls on this process alone, never raising its priority above ``nice``
    (where it started) nor to a real-time policy; ioprio only to the idle class."""
    me = (0, pid)
    return (allowed_if(SETPRIORITY, (0, None, (PRIO_PROCESS,)), (1, None, me), (2, None, ">=", nice))
            + allowed_if(SCHED_SETSCHEDULER, (0, None, me), (1, ~SCHED_RESET_ON_FORK, LOWER_POLICIES))
            + allowed_if(SCHED_SETPARAM, (0, None, me))
            + allowed_if(SCHED_SETAFFINITY, (0, None, me))
            + allowed_if(IOPRIO_SET, (0, None, (IOPRIO_WHO_PROCESS,)), (1, None, me),
                         (2, 0xFFFFE000, (IOPRIO_CLASS_IDLE,)))
            + allowed_if(MIGRATE_PAGES, (0, None, me))
            + allowed_if(MOVE_PAGES, (0, None, me)))


def seccomp(libc, *, network):
    """A seccomp filter refusing what DENIED lists; x86-64 Linux only. Returns whether it is in force."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return False
    clone_thread, pid = 0x00010000, os.getpid()
    prog = [op(LD, 4), op(JEQ, 0xC000003E, 1, 0), op(RET, KILL_PROCESS),  # arch must be x86-64
            op(LD, 0), op(JGE, 0x40000000, 0, 1), op(RET, ENOSYS),  # no x32 syscalls
            # clone: threads only
            op(JEQ, CLONE, 0, 4), op(LD, 16), op(JSET, clone_thread, 0, 1), op(RET, ALLOW), op(RET, EPERM),
            # clone3 hides its flags in memory: ENOSYS makes glibc fall back to clone
            op(JEQ, CLONE3, 0, 1), op(RET, ENOSYS),
            # prlimit64: reading is fine, setting is not
            op(JEQ, PRLIMIT64, 0, 6), op(LD, 32), op(JEQ, 0, 0, 3), op(LD, 36), op(JEQ, 0, 0, 1),
            op(RET, ALLOW), op(RET, EPERM)]
    for number in (KILL, TGKILL):  # signals to this process only
        prog += [op(JEQ, number, 0, 6), op(LD, 16), op(JEQ, pid, 0, 3), op(LD, 20), op(JEQ, 0, 0, 1),
                 op(RET, ALLOW), op(RET, EPERM)]
    prog += scheduling_rules(pid, os.getpriority(os.PRIO_PROCESS, 0))  # these load arguments: syscall again after
    prog.append(op(LD, 0))
    for number in DENIED + (() if network else SOCKETS):
        prog += [op(JEQ, number, 0, 1), op(RET, EPERM)]
    prog.append(op(RET, ALLOW))
    code = b"".join(prog)
    buffer = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = Program(len(prog), ctypes.addressof(buffer))
    no_new_privs(libc)
    return libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(program),
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


def install_audit_hook(read_roots, *, workdir, network):
    """Refuse what REFUSED lists, and paths outside ``workdir`` (reading also ``read_roots``)."""
    sep, realpath, fsdecode, fspath = os.sep, os.path.realpath, os.fsdecode, os.fspath
    readable = (workdir, *read_roots)
    writable = (workdir,)
    refused_prefixes = ("ctypes.",) + (() if network else ("socket.",))

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
                                  f"only the working folder {workdir} is")

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
