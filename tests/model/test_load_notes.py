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
