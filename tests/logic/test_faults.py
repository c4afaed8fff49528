"""The engine process's test-only fault hook reads only what it can act on: anything else is no fault."""

from __future__ import annotations

import pytest

from aimo_gguf.supervise.faults import FAULT_ENV, Fault


@pytest.mark.parametrize(("spec", "expected"), [
    ("abort@load", ("abort", "load", None, False)),
    ("sigsegv@load@once", ("sigsegv", "load", None, True)),
    ("sigill@decode:p3", ("sigill", "decode", "p3", False)),
    ("exit@tool:q1@once", ("exit", "tool", "q1", True)),
    ("abort@decode:a:b", ("abort", "decode", "a:b", False)),
])
def test_a_fault_spec_is_read(monkeypatch, spec, expected):
    monkeypatch.setenv(FAULT_ENV, spec)
    fault = Fault.from_env()
    assert (fault.how, fault.where, fault.problem, fault.once) == expected


@pytest.mark.parametrize("spec", ["", "abort", "boom@load", "abort@load:p1", "abort@decode", "abort@tool:",
                                  "abort@later:p1", "abort@load@twice", "abort@load@once@once"])
def test_anything_else_is_no_fault(monkeypatch, spec):
    monkeypatch.setenv(FAULT_ENV, spec)
    assert Fault.from_env() is None


@pytest.mark.parametrize(("once", "number", "live"), [(False, 0, True), (False, 2, True), (True, 0, True),
                                                       (True, 1, False)])
def test_once_means_the_first_engine_process_only(once, number, live):
    assert Fault("abort", "load", once=once, number=number).live is live
