"""A real split of the embedded SmolLM2 (three parts) loads by its first part, generates the same
greedy tokens as the whole file, and runs through info and run."""

from __future__ import annotations

import json

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.gguf.parts import split_gguf

USER = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "smol.gguf"
    return split_gguf(default_model_path(), out, max_tensors=100, progress=False)


def greedy(path) -> list[list[int]]:
    with Engine(path, ctx=256, batch_size=2, threads=2) as engine:
        requests = [Request(i, engine.tokenize(USER.format(q)), 24, 0, SamplingParams(temperature=0))
                    for i, q in enumerate(["What is 2+2?", "Name a color."])]
        return [c.tokens for c in sorted(engine.generate(requests), key=lambda c: c.request.key)]


@pytest.mark.model
def test_a_split_model_loads_by_its_first_part_and_generates_the_same_tokens(parts):
    assert len(parts) == 3
    assert greedy(parts[0]) == greedy(default_model_path())


@pytest.mark.model
def test_info_and_run_take_the_first_part(runner, parts, tmp_path):
    whole = json.loads(runner.invoke(cli, ["info", str(default_model_path()), "--json"]).stdout)
    info = runner.invoke(cli, ["info", str(parts[0]), "--json"])
    assert info.exit_code == 0, info.output
    split = json.loads(info.stdout)
    assert split["files"] == [str(p) for p in parts]
    assert split["estimate"]["weights_cpu"] == whole["estimate"]["weights_cpu"]  # the same tensors, counted once
    out = tmp_path / "sub.csv"
    result = runner.invoke(cli, ["run", "-m", str(parts[0]), "-n", "1", "--max-tokens", "16", "-t", "2", "-q",
                                 "--temperature", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("\n") == 13  # the header and the 12 sample problems
    refused = runner.invoke(cli, ["run", "-m", str(parts[0]), "-o", str(parts[2]), "-q"])
    assert refused.exit_code == 2 and "part 3 of the model" in refused.stderr
