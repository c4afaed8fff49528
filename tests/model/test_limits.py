"""The limits aimo-gguf checks before a load are llama.cpp's own (issue 20, items 10-12), on the real SmolLM2."""

from __future__ import annotations

import pytest

from aimo_gguf.engine import llama
from aimo_gguf.engine.limits import check_context, max_sequences, trained_context
from aimo_gguf.errors import InputError, ModelError
from aimo_gguf.gguf.files import default_model_path


@pytest.fixture(scope="module")
def model():
    path = default_model_path()
    loaded = llama.LlamaModel(path)
    yield path, loaded
    loaded.close()


def context(loaded, n_seq_max):
    return llama.LlamaContext(loaded, n_seq_max=n_seq_max, n_ctx=256, n_batch=256, n_ubatch=256, threads=1,
                              flash_attn="auto", kv_type="f16", kv_unified=True)


def test_llama_cpp_makes_a_context_of_as_many_sequences_as_the_limit_and_refuses_one_more(model):
    _, loaded = model
    ctx = context(loaded, max_sequences())
    assert ctx.n_ctx >= 256
    ctx.close()
    with pytest.raises(ModelError):
        context(loaded, max_sequences() + 1)


def test_the_trained_context_is_the_one_llama_cpp_reads(model):
    path, loaded = model
    assert trained_context(path) == loaded.n_ctx_train == 8192
    check_context(path, ctx=loaded.n_ctx_train, batch_size=1)
    with pytest.raises(InputError, match="trained for"):
        check_context(path, ctx=loaded.n_ctx_train + 1, batch_size=1)
