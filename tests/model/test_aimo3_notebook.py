"""The shipped AIMO3 notebook with the real SmolLM2 under the gateway stand-in (gRPC on localhost):
test.csv and reference.csv, the submission read back, the local accuracy counted."""

from __future__ import annotations

import pytest

pytest.importorskip("polars")
pytest.importorskip("grpc")

from cli.test_aimo3_gateway import STANDIN, run_notebook  # noqa: E402 - after the skips

OPTIONS = "dict(samples=2, batch_size=4, max_tokens=48, temperature=0.0)"


@pytest.mark.parametrize(("name", "csv_text", "graded"), [
    ("test.csv", "id,problem\na1,What is 7 + 5?\nb2,What is 3 times 4?\nc3,What is 100 minus 1?\n", 0),
    ("reference.csv", "id,problem,answer\na1,What is 7 + 5?,12\nb2,,0\nc3,What is 2 to the power 5?,inf\n", 2),
])
@pytest.mark.slow
def test_the_notebook_runs_smollm2_under_the_gateway(tmp_path, name, csv_text, graded):
    stats, submission = run_notebook(tmp_path, STANDIN, csv_text, answer=None, name=name, options=OPTIONS)
    assert stats["problems"] == 3 and stats["failures"] == 0 and stats["graded"] == graded
    assert sorted(submission["id"]) == ["a1", "b2", "c3"]
    assert all(0 <= a <= 99999 for a in submission["answer"])
