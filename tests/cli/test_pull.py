"""aimo-gguf pull, on a local Hugging Face cache (the Hub cannot be reached from CI)."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error, make_hub_cache, time_limit

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


# --- issue 20, item 15: names that are not a repo or a file in one, and a Hub that cannot be reached ------------


@pytest.mark.parametrize("repo", ["../../etc", "a b/c", "a/b/c", "/x", "a/../b", "a--b/c", "a/-b", "a/b.", "org/",
                                  "x" * 97, "org/tiny GGUF", "org\\tiny"])
def test_a_repo_that_is_not_a_hub_repo_id_is_one_line(runner, hub_cache, tmp_path, repo):
    models = tmp_path / "models"
    result = runner.invoke(cli, ["pull", repo, "tiny.gguf", "--models-dir", str(models)])
    assert_one_line_error(result, f"{repo!r} is not a Hub repo id", "NAMESPACE/NAME")
    assert not models.exists()


@pytest.mark.parametrize("filename", ["../../x.gguf", "/abs/x.gguf", "a/../../x.gguf", "a//b.gguf", "./x.gguf",
                                      "a/./x.gguf", "..", "a\\..\\x.gguf", "", "dir/"])
def test_a_filename_that_is_not_a_path_inside_the_repo_is_one_line(runner, hub_cache, tmp_path, filename):
    models = tmp_path / "models"
    result = runner.invoke(cli, ["pull", "org/tiny-GGUF", filename, "--models-dir", str(models)])
    assert_one_line_error(result, "is not a file of a Hub repo")
    assert not models.exists() and not (tmp_path / "x.gguf").exists()


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The Hub's address is a local port nothing listens on: every connection is refused at once."""
    import socket

    import huggingface_hub.constants as constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return port


def test_an_unreachable_hub_fails_fast_without_retries(runner, tmp_path, monkeypatch, unreachable_hub):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    models = tmp_path / "models"
    with time_limit(10, "pull with the Hub unreachable"):  # the library alone retries for about 24 s
        result = runner.invoke(cli, ["pull", "org/tiny-GGUF", "tiny.gguf", "--models-dir", str(models)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: cannot reach the Hub (127.0.0.1:") and "not in the local cache" in lines[-1]
    assert not any("Retrying" in line for line in lines)
    assert not models.exists() or list(models.iterdir()) == []


def test_an_unreachable_hub_still_serves_what_the_cache_holds(runner, hub_cache, tmp_path, monkeypatch,
                                                              unreachable_hub):
    models = tmp_path / "models"
    with time_limit(10, "pull from the cache with the Hub unreachable"):
        result = runner.invoke(cli, ["pull", "org/tiny-GGUF", "tiny.gguf", "--models-dir", str(models)])
    assert result.exit_code == 0, result.output
    assert (models / "tiny.gguf").read_bytes() == GGUF_BYTES
