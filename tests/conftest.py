"""Fixtures shared by the test tiers."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from aimo_gguf.config import ENV_PREFIX


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """AIMO_GGUF_* variables of the caller's shell must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
