"""aimo-gguf quantize: llama_model_quantize through the binding, written atomically."""

from __future__ import annotations

from aimo_gguf.quantize import file_types


def test_file_type_names_match_llama_cpp():
    types = file_types()
    assert types["Q4_K_M"] == 15 and types["Q8_0"] == 7 and types["F16"] == 1 and types["F32"] == 0
    assert "GUESSED" not in types
