"""The AIMO3 notebook under the competition's gateway: the README's code, kaggle.py's and the shipped
notebook's are one, and it runs as written, over gRPC on localhost, on test.csv and reference.csv.

The gateway is the stand-in in tests/data/aimo3_gateway (what the real relay checks and sends), and
also the real ``kaggle_evaluation`` where ``AIMO_KAGGLE_EVALUATION`` points at a copy of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest
from helpers import ROOT, clean_env

pl = pytest.importorskip("polars")
pytest.importorskip("grpc")

NOTEBOOK = ROOT / "notebooks" / "aimo3_submission.ipynb"
STANDIN = ROOT / "tests" / "data" / "aimo3_gateway"
REAL = os.environ.get("AIMO_KAGGLE_EVALUATION")
GATEWAYS = [
    pytest.param(STANDIN, id="stand-in"),
    pytest.param(REAL, id="real", marks=pytest.mark.skipif(
        not REAL, reason="AIMO_KAGGLE_EVALUATION is not set: the competition's kaggle_evaluation is not shipped")),
]
RUNNER = ROOT / "tests" / "notebook_run.py"


def notebook_code() -> str:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_the_readme_kaggle_py_and_the_notebook_hold_the_same_code():
    readme = (ROOT / "README.md").read_text().split("### The AIMO3 inference server", 1)[1]
    readme_code = re.search(r"```python\n(.*?)```", readme, re.S).group(1).rstrip()
    doc = (ROOT / "aimo_gguf" / "kaggle.py").read_text().split("README)::\n\n", 1)[1].split('"""', 1)[0]
    doc_code = "\n".join(line[4:] for line in doc.rstrip().splitlines())
    assert readme_code == notebook_code()
    assert doc_code == notebook_code()


def run_notebook(tmp_path, gateway, csv_text: str, *, answer: int = 12, name: str = "test.csv",
                 options: str | None = None, env: dict | None = None) -> tuple[dict, pl.DataFrame]:
    data = tmp_path / name
    data.write_text(csv_text)
    settings = ["--set", f"DATA={str(data)!r}", "--set", "MODEL=None"]
    if options is not None:
        settings += ["--set", f"OPTIONS={options}"]
    fake = [] if answer is None else ["--fake-answer", str(answer)]
    done = subprocess.run([sys.executable, str(RUNNER), str(NOTEBOOK), "--gateway", str(gateway), *settings, *fake],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=clean_env(PYTHONPATH=str(ROOT), **(env or {})))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    run_notebook.stderr = done.stderr
    return stats, pl.read_parquet(tmp_path / "submission.parquet")


# Rows as the gateway reads them (an empty cell is a null), the fake model's answer 12, and what the
# adapter must count: null and blank problems get the fallback at once; an answer that is not an
# integer (inf, NaN, text, empty) is not graded; every row gets one integer answer.
CASES = [
    ("id,problem\na1,What is 7 + 5?\nb2,What is 3 times 4?\nc3,What is 9 - 1?\n",
     dict(problems=3, answered=3, empty=0, graded=0, correct=0), {"a1": 12, "b2": 12, "c3": 12}),
    ("id,problem,answer\na1,What is 7 + 5?,12\nb2,What is 3 times 4?,12\nc3,What is 9 - 1?,8\n",
     dict(problems=3, answered=3, empty=0, graded=3, correct=2), {"a1": 12, "b2": 12, "c3": 12}),
    ("id,problem,answer\nn1,,5\nn2,\"   \",0\nn3,What is 7 + 5?,12\n",
     dict(problems=3, answered=1, empty=2, graded=3, correct=2), {"n1": 0, "n2": 0, "n3": 12}),
    ("id,problem,answer\nf1,What is 7 + 5?,inf\nf2,What is 3 times 4?,NaN\nf3,What is 1 + 11?,1e400\n",
     dict(problems=3, answered=3, empty=0, graded=0, correct=0), {"f1": 12, "f2": 12, "f3": 12}),
    ("id,problem,answer\nt1,What is 7 + 5?,twelve\nt2,What is 3 times 4?,\nt3,,\n",
     dict(problems=3, answered=2, empty=1, graded=0, correct=0), {"t1": 12, "t2": 12, "t3": 0}),
]


@pytest.mark.parametrize("gateway", GATEWAYS)
@pytest.mark.parametrize(("csv_text", "counts", "answers"), CASES)
def test_the_notebook_runs_under_the_gateway(tmp_path, gateway, csv_text, counts, answers):
    stats, submission = run_notebook(tmp_path, gateway, csv_text)
    assert {k: stats[k] for k in counts} == counts
    assert stats["failures"] == 0
    assert submission.columns == ["id", "answer"] and submission["answer"].dtype == pl.Int64
    assert dict(zip(submission["id"], submission["answer"])) == answers


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_bound_method_is_refused_and_the_plain_function_is_named_predict(gateway):
    # What the README did before: AIMO3InferenceServer(solver.predict) fails in the relay.
    code = (f"import sys; sys.path.insert(0, {str(gateway)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
            "import kaggle_evaluation.aimo_3_inference_server as k\n"
            "from fakes import FakeEngine\n"
            "from aimo_gguf.kaggle import KaggleSolver\n"
            "solver = KaggleSolver(engine=FakeEngine(lambda p, s: ''), total_seconds=60, safety_seconds=1)\n"
            "assert solver.predict_function().__name__ == 'predict'\n"
            "k.AIMO3InferenceServer(solver.predict_function())\n"
            "k.AIMO3InferenceServer(solver.predict)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=clean_env(PYTHONPATH=str(ROOT)))
    assert done.returncode == 1
    assert "ValueError: Endpoint listeners passed to `serve` must be functions, got <class 'method'>" in done.stderr


THREE = "id,problem\na1,What is 7 + 5?\nb2,What is 3 times 4?\nc3,What is 9 - 1?\n"


@pytest.mark.parametrize("gateway", GATEWAYS)
@pytest.mark.parametrize(("fault", "crashes", "answers"), [
    ("abort@decode:b2@once", 1, {"a1": 12, "b2": 12, "c3": 12}),  # retried on the fresh engine: answered
    ("sigsegv@decode:b2", 2, {"a1": 12, "b2": 0, "c3": 12}),  # died on it twice: the fallback; c3 on a fresh one
    ("sigill@decode:b2", 2, {"a1": 12, "b2": 0, "c3": 12}),
])
def test_an_engine_crash_costs_the_gateway_one_answer_at_most(tmp_path, gateway, fault, crashes, answers):
    stats, submission = run_notebook(tmp_path, gateway, THREE, env={"AIMO_GGUF_CHILD_FAULT": fault})
    assert dict(zip(submission["id"], submission["answer"])) == answers
    assert stats["engine_crashes"] == crashes and stats["failures"] == 0
    assert stats["problems"] == 3 and stats["fallbacks"] == list(answers.values()).count(0)
    assert "a fresh engine is loading" in run_notebook.stderr
    deadline = time.monotonic() + 5  # the kernel's SIGKILL (PR_SET_PDEATHSIG) lands a moment after the exit
    while (left := [p.pid for p in psutil.process_iter() if _cwd(p) == str(tmp_path)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left  # the notebook ended: no engine process or worker outlives it


def _cwd(process) -> str | None:
    try:
        return None if process.status() == psutil.STATUS_ZOMBIE else process.cwd()
    except psutil.Error:
        return None
