"""Text UTF-8 cannot encode, through the real engine: a tool's output, a problem, a stop string, a model path.

Issue 20: ``print(chr(55296))`` in one sample's code raised ``UnicodeEncodeError``
from tokenizing its output in the scheduler's tool poll, and the whole run
ended with no submission; a JSONL problem holding ``"\\ud800"`` was a
traceback. Command-line bytes that are not UTF-8 reach Python as lone
surrogates too (``surrogateescape``): a ``--stop`` or a ``-m`` path of them.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from helpers import clean_env

from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.sandbox import SandboxLimits, SandboxPool
from aimo_gguf.styles.tir import PythonTool, ToolStats

USER = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine():
    with Engine(default_model_path(), ctx=512, batch_size=2, threads=2) as e:
        yield e


@pytest.mark.parametrize("code", ["print(chr(55296))", "print('a' + chr(0xdfff) * 3)",
                                  "import sys; sys.stdout.write(chr(0xdc80) + '\\n')"])
def test_a_tool_printing_a_lone_surrogate_is_read_back_and_the_sample_goes_on(engine, code):
    stats = ToolStats()
    with SandboxPool(SandboxLimits(timeout=5)) as pool:
        prompt = USER.format("Print a character with Python.") + f"```python\n{code}\n"
        tir = Request("tir", engine.tokenize(prompt), 24, 0, SamplingParams(temperature=0.0),
                      tool=PythonTool(pool, "tir", max_calls=1, stats=stats, prefix=prompt))
        [done] = engine.generate([tir])
    assert stats.calls == 1 and stats.ok == 1
    assert "```output\n" in done.text and "\ufffd" in done.text  # the output came back, each one as U+FFFD


def test_a_run_takes_unencodable_problems_stop_strings_and_model_paths(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "problem": "What is 1 + 1? \\ud800"}\n'
                        '{"id": "b", "problem": "\\udfff\\ud83d What is 2 + 2?"}\n', encoding="utf-8")
    model = os.path.join(os.fsencode(tmp_path), b"m\xff.gguf")  # a name that is not UTF-8
    os.symlink(default_model_path(), model)
    out, summary, traces = tmp_path / "sub.csv", tmp_path / "s.json", tmp_path / "t.jsonl"
    args = [sys.executable, "-m", "aimo_gguf", "run", str(problems), "-m", model, "--stop", b"\xfe\n",
            "-o", str(out), "--summary", str(summary), "--traces", str(traces),
            "-q", "-t", "2", "-n", "1", "--max-tokens", "8", "--temperature", "0"]
    done = subprocess.run([os.fsencode(a) for a in args], capture_output=True, text=True, env=clean_env(),
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert [r["id"] for r in csv.DictReader(out.open())] == ["a", "b"]
    s = json.loads(summary.read_text(encoding="utf-8"))
    assert s["problems_done"] == 2 and s["model"].endswith("m\udcff.gguf")
    assert len(traces.read_text(encoding="utf-8").splitlines()) == 2
