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


PARTS = {"Q4/big-00001-of-00002.gguf": GGUF_BYTES + b"1", "Q4/big-00002-of-00002.gguf": GGUF_BYTES + b"2",
         "half-00001-of-00002.gguf": GGUF_BYTES}


@pytest.fixture
def split_cache(tmp_path, monkeypatch):
    return make_hub_cache(tmp_path / "hub", "org/big-GGUF", PARTS, COMMIT, monkeypatch)


def test_pulling_the_first_part_of_a_split_model_brings_every_part(runner, split_cache, tmp_path):
    models = tmp_path / "models"
    result = runner.invoke(cli, ["pull", "org/big-GGUF", "Q4/big-00001-of-00002.gguf", "--models-dir", str(models)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(models / "big-00001-of-00002.gguf")  # what --model takes
    assert sorted(p.name for p in models.iterdir()) == ["big-00001-of-00002.gguf", "big-00002-of-00002.gguf"]
    assert (models / "big-00002-of-00002.gguf").read_bytes() == GGUF_BYTES + b"2"
    assert "part 2 of 2" in result.stderr


@pytest.mark.parametrize(("filename", "fragment"), [
    ("Q4/big-00002-of-00002.gguf", "pull its first part, big-00001-of-00002.gguf"),
    ("half-00001-of-00002.gguf", "not in the local cache"),  # its second part is missing: nothing placed
])
def test_a_later_part_or_a_missing_part_is_one_line_and_places_nothing(runner, split_cache, tmp_path, filename,
                                                                       fragment):
    models = tmp_path / "models"
    result = runner.invoke(cli, ["pull", "org/big-GGUF", filename, "--models-dir", str(models)])
    assert result.exit_code == 2 and fragment in result.stderr
    lines = result.stderr.strip().splitlines()  # progress lines, then one error line
    assert lines[-1].startswith("Error:") and sum(line.startswith("Error:") for line in lines) == 1
    assert not models.exists() or list(models.iterdir()) == []


def test_a_part_that_cannot_be_placed_leaves_no_part_behind(runner, split_cache, tmp_path, monkeypatch):
    import os
    import shutil

    copies = []

    def no_link(*a):
        raise OSError("cross-device link")

    def copy_then_fail(src, dst):
        copies.append(dst)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst)

    real_copy = shutil.copyfile
    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    models = tmp_path / "models"
    result = runner.invoke(cli, ["pull", "org/big-GGUF", "Q4/big-00001-of-00002.gguf", "--models-dir", str(models)])
    assert result.exit_code == 2 and "No space left on device" in result.stderr
    assert list(models.iterdir()) == []  # neither the first part nor a staging file
