"""The engine process's fault hook: real native deaths at chosen points, for the tests only.

``AIMO_GGUF_CHILD_FAULT=HOW@WHERE[@once]`` makes the engine process die:

- HOW: ``abort`` (``os.abort()``: SIGABRT, as a failed ``GGML_ASSERT``), ``sigsegv`` (a read of address 0),
  ``sigill`` (an illegal instruction, as the probe's), ``exit`` (``os._exit(3)``: an exit without goodbye);
- WHERE: ``load`` (the model loaded, before the parent hears of it), ``decode:ID`` (the first engine step
  after problem ID was taken), ``tool:ID`` (while a ``--tir`` tool call of problem ID runs in its sandbox
  worker);
- ``once``: only in the run's first engine process, so the restarted one gets past it.

The engine process reads the variable; the run that starts it checks it first (``check_env``): a value it
cannot parse is one ``Error:`` line, and a set one is said on stderr, so a user who finds it in an
environment knows why the engine dies.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass, field

from ..errors import InputError

FAULT_ENV = "AIMO_GGUF_CHILD_FAULT"
HOWS = ("abort", "sigsegv", "sigill", "exit")
TOOL_GRACE_SECONDS = 0.5  # the worker gets this long to start running the code before the process dies


@dataclass
class Fault:
    how: str
    where: str  # load, decode or tool
    problem: str | None = None  # the problem id of decode and tool
    once: bool = False
    number: int = 0  # this process's number in the run (set at load)
    positions: set[int] = field(default_factory=set)  # the current solve call's positions holding ``problem``
    taken: bool = False  # the problem was taken in this solve call

    @classmethod
    def from_env(cls) -> Fault | None:
        spec = os.environ.get(FAULT_ENV, "")
        parts = spec.split("@")
        if len(parts) not in (2, 3) or parts[0] not in HOWS or (len(parts) == 3 and parts[2] != "once"):
            return None
        where, _, problem = parts[1].partition(":")
        if where not in ("load", "decode", "tool") or (where != "load") != bool(problem):
            return None
        return cls(parts[0], where, problem or None, once=len(parts) == 3)

    @classmethod
    def check_env(cls) -> Fault | None:
        """The fault the variable sets, said on stderr; an unreadable value is an InputError."""
        spec = os.environ.get(FAULT_ENV, "")
        if not spec:
            return None
        fault = cls.from_env()
        if fault is None:
            raise InputError(f"{FAULT_ENV}={spec!r} is not HOW@WHERE[@once] (HOW: {', '.join(HOWS)}; WHERE: load, "
                             f"decode:ID, tool:ID): it is a test hook, unset it")
        print(f"aimo-gguf: {FAULT_ENV}={spec} is set: the engine process will die on purpose there (a test hook)",
              file=sys.stderr)
        return fault

    def arm(self, problems) -> None:
        """A solve call starts on ``problems``: where the target is, and the tool hook when it is a tool call."""
        self.positions = {i for i, p in enumerate(problems) if p.id == self.problem}
        self.taken = False
        if self.where == "tool" and self.positions and self.live:
            self._hook_tools()

    def take(self, i: int) -> None:
        self.taken = self.taken or i in self.positions

    @property
    def live(self) -> bool:
        return not self.once or self.number == 0

    def at(self, where: str) -> None:
        """A point the process passes: die here if this is the fault's."""
        if where == self.where and self.live and (where == "load" or self.taken):
            die(self.how)

    def _hook_tools(self) -> None:
        # The sandbox pool is made inside Solver.solve: the hook wraps its submit, for this process only.
        from ..sandbox.pool import SandboxPool

        submit, positions, how = SandboxPool.submit, self.positions, self.how

        def dying_submit(pool, key, code):
            future = submit(pool, key, code)
            if isinstance(key, tuple) and key[0] in positions:
                time.sleep(TOOL_GRACE_SECONDS)
                die(how)
            return future

        SandboxPool.submit = dying_submit


def die(how: str) -> None:
    """End this process the native way ``how`` names."""
    if how == "abort":
        os.abort()
    elif how == "sigsegv":
        ctypes.string_at(0)
    elif how == "sigill":
        from ..engine.probe import _illegal_instruction

        _illegal_instruction()
    os._exit(3)
