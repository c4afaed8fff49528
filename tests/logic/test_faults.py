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


@pytest.mark.parametrize("spec", ["banana", "abort", "boom@load", "abort@load:p1", "abort@later:p1", "abort@load@twice"])
def test_a_run_refuses_a_fault_spec_it_cannot_read(monkeypatch, spec):
    """The run checks the variable before its engine process reads it: a user who finds it set learns so."""
    from aimo_gguf.errors import InputError

    monkeypatch.setenv(FAULT_ENV, spec)
    with pytest.raises(InputError, match=f"{FAULT_ENV}=.*test hook"):
        Fault.check_env()


@pytest.mark.parametrize("spec", ["abort@load", "sigill@decode:p3@once", "exit@tool:q1"])
def test_a_run_says_a_fault_is_set(monkeypatch, capsys, spec):
    monkeypatch.setenv(FAULT_ENV, spec)
    assert Fault.check_env() is not None
    assert f"{FAULT_ENV}={spec} is set" in capsys.readouterr().err


def test_no_fault_is_no_note(monkeypatch, capsys):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    assert Fault.check_env() is None and capsys.readouterr().err == ""
