"""What the load says about the context it gave: llama.cpp sizes a sequence's context in steps of 256."""

from __future__ import annotations

import pytest

from aimo_gguf.config import make_config
from aimo_gguf.fit.plan import load_engine
from aimo_gguf.gguf.files import default_model_path


@pytest.mark.parametrize(("options", "n_ctx_seq"), [
    (dict(ctx=16), 256), (dict(ctx=300), 512), (dict(ctx=512), 512), (dict(max_tokens=8), 768),
])
def test_a_context_other_than_the_one_asked_for_is_said(options, n_ctx_seq):
    """Issue 20: --ctx 16 silently became 256. An automatic context (512 + --max-tokens) is not the user's
    number: it gets no note."""
    with load_engine(make_config(batch_size=2, threads=2, **options), default_model_path()) as engine:
        assert engine.n_ctx_seq == n_ctx_seq
        notes = [note for note in engine.info.notes if "--ctx" in note]
    asked = options.get("ctx")
    if asked is not None and asked != n_ctx_seq:
        assert notes == [f"--ctx {asked} is {n_ctx_seq} tokens per sequence: llama.cpp sizes it in steps of 256"]
    else:
        assert notes == []


@pytest.mark.parametrize("options", [
    dict(), dict(n_gpu_layers="auto"), dict(batch_size="auto", max_memory="1GiB"), dict(n_gpu_layers=-1),
    dict(n_gpu_layers="auto", batch_size="auto", max_memory="2GiB", ctx=256),
])
@pytest.mark.parametrize("in_process", [True, False])
def test_the_run_path_reads_the_header_once(monkeypatch, tmp_path, options, in_process):
    """Issue 23: the load parsed the GGUF header up to four times. From the CLI's options to a loaded engine and
    a solved problem, the header is read once, whatever 'auto' leaves to the plan. In process that is the whole
    path; with the engine in its child process, the parent plans and the child is handed the plan."""
    import aimo_gguf.gguf.header as header
    from aimo_gguf.pipeline.problems import Problem
    from aimo_gguf.pipeline.runner import run

    real, reads = header.read_header, []

    def counted(path, **kwargs):
        reads.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(header, "read_header", counted)
    config = make_config(samples=1, max_tokens=4, threads=2, in_process=in_process, **{"batch_size": 1, **options})
    run([Problem(id="p", problem="What is 1 + 1?")], output=tmp_path / "s.csv", progress=False, config=config)
    assert reads == [str(default_model_path())]
