"""The package's lazy exports: every name in ``__all__`` resolves."""

from __future__ import annotations

import pytest

import aimo_gguf


@pytest.mark.parametrize("name", aimo_gguf.__all__)
def test_every_exported_name_resolves(name):
    assert getattr(aimo_gguf, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'runner'"):
        aimo_gguf.runner
