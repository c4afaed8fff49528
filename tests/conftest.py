"""Fixtures shared by the test tiers, and the tiers themselves.

Every test sits in one tier, named by its folder and marked with it:

- ``logic`` (tests/logic): pure logic, no model, many parametrized cases;
- ``cli`` (tests/cli): the CLI through CliRunner and the solver, on the fake
  engine that declares the real one's interface;
- ``model`` (tests/model, and ``model`` params elsewhere): the real SmolLM2 or
  Gemma GGUF through llama.cpp.

``pytest -m "not model"`` runs every test that needs no model. A test outside
the model tier that loads a model fails: the tier would be a lie.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aimo_gguf.config import ENV_PREFIX

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests import fakes.py as a module of their own
TIERS = ("logic", "cli", "model")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).resolve().relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _no_model_outside_the_model_tier(request, monkeypatch):
    """Outside the model tier, loading a GGUF model is an error, not a slow test."""
    if request.node.get_closest_marker("model") is not None:
        return
    from aimo_gguf.engine import llama

    def refuse(self, path, **kwargs):
        raise AssertionError(f"a test outside the model tier loaded {path}: mark it model or use the fake engine")

    monkeypatch.setattr(llama.LlamaModel, "__init__", refuse)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """AIMO_GGUF_* variables of the caller's shell must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def problems_csv(tmp_path):
    """Three tiny problems, two with their answers, ids out of order."""
    path = tmp_path / "problems.csv"
    path.write_text("id,problem,answer\nb,What is 2 + 2?,4\na,What is 3 + 3?,6\nc,What is 1 + 1?,\n", encoding="utf-8")
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A factory of tiny tmpfs mounts (``small_disk("8m")``), unmounted afterwards; skips without root."""
    mounts = []

    def make(size: str, name: str = "disk") -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
