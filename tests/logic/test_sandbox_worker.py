"""The sandbox worker program as a module: it imports only the standard library, importing it runs
nothing, and its helpers do what the protocol promises."""

from __future__ import annotations

import ast
import sys

import pytest

from aimo_gguf.sandbox import OUTPUT_CUT_MARK, worker
from aimo_gguf.sandbox.process import WORKER


@pytest.mark.parametrize("program", [WORKER, WORKER.with_name("walls.py")])
def test_the_worker_imports_only_the_standard_library(program):
    """The worker and its walls (the one module it loads from beside it)."""
    tree = ast.parse(program.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the worker runs by path: no relative imports"
            modules.add(node.module.split(".")[0])
    outside = {m for m in modules if m not in sys.stdlib_module_names} - {"walls"}
    assert not outside, f"the worker must run on the standard library alone, it imports {sorted(outside)}"


def test_importing_the_worker_starts_nothing():
    assert worker.CONFIG == {} and worker.LIBC is None and worker.WORKDIR == ""


def test_the_cut_mark_is_the_parents():
    assert worker.DEFAULT_CUT_MARK == OUTPUT_CUT_MARK


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("short", 10, "short"),
    ("0123456789", 10, "0123456789"),
    ("abcdefghijkl", 4, "ab" + OUTPUT_CUT_MARK.format(n=8) + "kl"),
    ("abcdefghijkl", 1, "" + OUTPUT_CUT_MARK.format(n=11) + "l"),
])
def test_cut_keeps_head_and_tail_within_the_limit(text, limit, expected):
    assert worker.cut(text, text, len(text), limit, OUTPUT_CUT_MARK) == expected


def test_capture_keeps_the_first_and_last_characters_written():
    out = worker.Capture(6)
    for piece in ["abc", "def", "ghi", "jkl"]:
        out.write(piece)
    assert out.total == 12
    assert out.text() == "abc" + OUTPUT_CUT_MARK.format(n=6) + "jkl"
    with pytest.raises(TypeError):
        out.write(b"bytes")


@pytest.mark.parametrize(("error", "line"), [
    (ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero"),
    (ValueError("first\nsecond"), "second"),
    (SystemExit(3), "SystemExit: 3"),
])
def test_error_line_is_the_last_line_of_the_error(error, line):
    assert worker.error_line(error) == line


def test_error_line_of_a_syntax_error_names_its_line():
    try:
        compile("x = (", "<cell>", "exec")
    except SyntaxError as e:
        assert worker.error_line(e).startswith("SyntaxError:") and "(line 1)" in worker.error_line(e)


def test_names_in_finds_names_in_nested_code():
    code = compile("def f():\n    return np.zeros(3)\nx = sp.Symbol('x')", "<cell>", "exec")
    assert {"np", "sp"} <= worker.names_in(code)


def test_python_roots_are_real_folders_that_hold_the_standard_library():
    roots = worker.walls.python_roots()
    assert roots == sorted(set(roots))
    assert any(__import__("os").__file__.startswith(root) for root in roots)
