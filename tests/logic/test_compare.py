"""aimo-gguf compare: next-token agreement and KL divergence of two models, and their accuracy."""

from __future__ import annotations

import numpy as np

from aimo_gguf.compare import Comparison, ProblemScore, TextComparison, _log_softmax


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
