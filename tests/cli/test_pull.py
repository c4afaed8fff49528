"""aimo-gguf pull, on a local Hugging Face cache (the Hub cannot be reached from CI)."""

from __future__ import annotations

import pytest
from helpers import make_hub_cache

from aimo_gguf.cli import cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"


GGUF_BYTES = b"GGUF" + bytes(60)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding org/tiny-GGUF with tiny.gguf and notes.gguf (not a GGUF), offline."""
    files = {"tiny.gguf": GGUF_BYTES, "notes.gguf": b"just text, not a model"}
    return make_hub_cache(tmp_path / "hub", "org/tiny-GGUF", files, COMMIT, monkeypatch)


def test_pull_places_the_cached_file_in_models(runner, hub_cache, tmp_path):
    models = tmp_path / "models"
    result = runner.invoke(cli, ["pull", "org/tiny-GGUF", "tiny.gguf", "--models-dir", str(models)])
    assert result.exit_code == 0, result.stderr
    target = models / "tiny.gguf"
    assert result.stdout.strip() == str(target)
    assert target.read_bytes() == GGUF_BYTES and not target.is_symlink()
    assert sorted(p.name for p in models.iterdir()) == ["tiny.gguf"]
    again = runner.invoke(cli, ["pull", "org/tiny-GGUF", "tiny.gguf", "--models-dir", str(models)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert runner.invoke(cli, ["pull", "org/tiny-GGUF", "tiny.gguf", "--models-dir", str(models), "--force"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["org/tiny-GGUF", "missing.gguf"], "not in the local cache"),
        (["org/tiny-GGUF", "notes.gguf"], "Not a GGUF file"),
        (["org/tiny-GGUF", "weights.safetensors"], "is not a .gguf file"),
    ],
)
def test_pull_errors_are_one_line(runner, hub_cache, tmp_path, args, fragment):
    result = runner.invoke(cli, ["pull", *args, "--models-dir", str(tmp_path / "models")])
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error:")
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
