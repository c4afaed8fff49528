"""No command writes into, or replaces, anything that is not a regular file (issue 20, item 3).

Every command that writes a file is pointed at a FIFO, a null device, a
full device, a folder and a symlink to a device. Each must refuse in one
``Error:`` line (exit 2) and leave the thing as it was: a FIFO must not hang
the command (a writer opening it blocks until a reader comes; the time guard
turns that into a failure), a device must not be written into or replaced by
a regular file. The devices are made with mknod in the test's folder (root),
so a regression replaces only those; without root the real /dev/null and
/dev/full are used, which a non-root process cannot replace.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
from helpers import make_hub_cache, time_limit

from aimo_gguf.cli import cli

KINDS = ("fifo", "null", "full", "folder", "link")
DEVICES = {"null": (1, 3), "full": (1, 7)}
FAKE_GGUF = b"GGUF" + bytes(60)
GUARD_SECONDS = 60
REFUSED = re.compile(r"not a regular file|is a directory")  # ours, or click's own for a folder


def make_special(path: Path, kind: str) -> Path:
    """``kind`` at ``path`` (or, for a device without root, the real one): what the command is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "link":
        path.symlink_to("/dev/null")
    else:
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(*DEVICES[kind]))
        except PermissionError:
            return Path(f"/dev/{kind}")
    return path


def snapshot(path: Path) -> tuple:
    """What must not change: the kind of thing at ``path``, its device numbers, where a link points."""
    st = os.lstat(path)
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino, target


def tiny_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    for i in range(6):
        writer.add_tensor(f"t{i}", np.full((4, 8), i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def graded_summary(path: Path) -> Path:
    from fakes import FakeEngine, boxed

    from aimo_gguf.pipeline import runner
    from aimo_gguf.pipeline.problems import Problem

    problems = [Problem(id="q0", problem="q0", answer=1)]
    runner.run(problems, output=path.with_suffix(".csv"), summary=path, progress=False, journal=False,
               engine=FakeEngine(lambda p, s: boxed(1), batch_size=1), samples=1, batch_size=1)
    return path


def fake_hf_folder(root: Path) -> tuple[Path, Path]:
    """A model folder convert gets as far as its outputs with, and a converter that lists its architecture."""
    model = root / "hf"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(bytes(1024))
    converter = root / "llama.cpp"
    converter.mkdir()
    (converter / "convert_hf_to_gguf.py").write_text(
        "import sys\nprint('TEXT models:')\nprint('- LlamaForCausalLM')\nsys.exit(1 if len(sys.argv) > 2 else 0)\n")
    return model, converter


def _quantize(tmp, special):
    src = tmp / "in.gguf"
    src.write_bytes(FAKE_GGUF)
    target = special(tmp / "out.gguf")
    return ["quantize", str(src), str(target), "--type", "Q8_0", "--force"], target


def _split(tmp, special):
    src = tiny_gguf(tmp / "tiny.gguf")
    (tmp / "out").mkdir()
    target = special(tmp / "out" / "tiny-00002-of-00002.gguf")  # the second of the two parts
    return ["split", str(src), str(tmp / "out" / "tiny.gguf"), "--max-tensors", "4", "--force", "-q"], target


def _synth(tmp, special):
    target = special(tmp / "synth.gguf")
    return ["synth", "--like", "Qwen2.5-0.5B-Instruct", "-o", str(target), "--force", "-q"], target


def _convert(tmp, special):
    model, converter = fake_hf_folder(tmp)
    target = special(tmp / "models" / "m-F16.gguf")
    return ["convert", str(model), "--quant", "", "--name", "m", "--outdir", str(tmp / "models"), "--force",
            "--no-smoke-test", "--llama-cpp-dir", str(converter), "-q"], target


def _pull(tmp, special, monkeypatch):
    make_hub_cache(tmp / "hub", "org/tiny-GGUF", {"tiny.gguf": FAKE_GGUF}, "0" * 40, monkeypatch)
    target = special(tmp / "models" / "tiny.gguf")
    return ["pull", "org/tiny-GGUF", "tiny.gguf", "--models-dir", str(tmp / "models"), "--force"], target


def _bench(flag):
    def command(tmp, special):
        model = tmp / "m.gguf"
        model.write_bytes(FAKE_GGUF)
        target = special(tmp / "bench.out")
        return ["bench", "-m", str(model), "--batch-sizes", "1", flag, str(target), "-q"], target
    return command


def _report(tmp, special):
    summary = graded_summary(tmp / "s.json")
    target = special(tmp / "plot.png")
    return ["report", str(summary), "--plot", str(target)], target


def _run(flag):
    def command(tmp, special):
        problems = tmp / "p.csv"
        problems.write_text("id,problem\na,What is 1 + 1?\n")
        model = tmp / "m.gguf"
        model.write_bytes(FAKE_GGUF)
        target = special(tmp / "run.out")
        out = [] if flag == "-o" else ["-o", str(tmp / "sub.csv")]
        return ["run", str(problems), "-m", str(model), *out, flag, str(target), "-q"], target
    return command


COMMANDS = {
    "quantize": _quantize, "split": _split, "synth": _synth, "convert": _convert, "pull": _pull,
    "bench --json-file": _bench("--json-file"), "bench --plot": _bench("--plot"), "report --plot": _report,
    **{f"run {flag}": _run(flag) for flag in ("-o", "--summary", "--traces", "--journal")},
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_writes_into_or_replaces_what_is_not_a_regular_file(runner, tmp_path, monkeypatch, command,
                                                                      kind):
    if command == "convert" and sys.platform != "linux":
        pytest.skip("the fake converter is a Linux script")
    build = COMMANDS[command]
    special = lambda path: make_special(path, kind)  # noqa: E731
    args, target = build(tmp_path, special, monkeypatch) if command == "pull" else build(tmp_path, special)
    before = snapshot(target)
    with time_limit(GUARD_SECONDS, f"{command} on a {kind}"):
        result = runner.invoke(cli, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: ") and REFUSED.search(lines[-1]), result.stderr
    assert sum(line.startswith("Error: ") for line in lines) == 1
    assert snapshot(target) == before  # not replaced, not turned into a file
    if kind == "folder":
        assert list(target.iterdir()) == []  # nothing written inside it either


@pytest.mark.parametrize("kind", KINDS)
def test_a_trace_stream_opened_in_place_is_refused_when_it_is_not_a_regular_file(tmp_path, kind):
    from aimo_gguf.errors import InputError
    from aimo_gguf.outputs import TraceWriter

    target = make_special(tmp_path / "t.jsonl", kind)
    before = snapshot(target)
    with time_limit(GUARD_SECONDS, f"TraceWriter on a {kind}"), pytest.raises(InputError, match="not a regular file"):
        TraceWriter(target, append=kind == "full")
    assert snapshot(target) == before
