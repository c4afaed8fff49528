"""The AIMO3 inference-server adapter: one problem at a time, inside a total time budget.

The competition's gateway calls ``predict(id_, problem)`` once per problem
(each a one-row polars Series) and wants a one-row DataFrame with ``id`` and
an integer ``answer`` back. ``KaggleSolver`` loads the model once, gives each
problem the time left divided by the problems still to come (time a problem
does not use goes to the later ones), and never raises from ``predict``: any
failure is logged and answered with the fallback.

Notebook cell::

    import os
    import kaggle_evaluation.aimo_3_inference_server
    from aimo_gguf.kaggle import KaggleSolver

    solver = KaggleSolver("/kaggle/input/my-model/model-Q4_K_M.gguf", n_gpu_layers=-1,
                          samples=8, batch_size=32, max_tokens=12000, ctx=13000)
    server = kaggle_evaluation.aimo_3_inference_server.AIMO3InferenceServer(solver.predict)
    if os.getenv("KAGGLE_IS_COMPETITION_RERUN"):
        server.serve()
    else:
        server.run_local_gateway(("/kaggle/input/ai-mathematical-olympiad-progress-prize-3/test.csv",))
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field

from .config import RunConfig
from .engine import Engine
from .problems import Problem
from .solver import clock, engine_kwargs, resolve_batch_size, solve

DEFAULT_TOTAL_SECONDS = 5 * 3600  # AIMO3: five hours of GPU notebook
DEFAULT_SAFETY_SECONDS = 15 * 60  # kept back for the gateway, the model load and a slow last step
DEFAULT_PROBLEMS = 50
ANSWER_RANGE = (0, 99999)


@dataclass
class AdapterStats:
    """Counters of the problems served so far (no per-problem logs)."""

    problems: int = 0
    answered: int = 0  # answers from the model's vote
    fallbacks: int = 0  # no valid answer: the fallback was returned
    failures: int = 0  # an exception inside predict: logged, the fallback was returned
    cut: int = 0  # problems whose time share ran out
    seconds: list[float] = field(default_factory=list)


class KaggleSolver:
    """Loads a model once and solves one problem per call within a share of the total budget.

    ``options`` are RunConfig fields (``samples``, ``batch_size``, ``max_tokens``,
    ``temperature``, ...), as for ``aimo_gguf.solver.run``. ``total_seconds`` counts
    from ``started_at`` (a ``time.time()`` value, default now): pass the
    notebook's start time so the model load and imports are counted.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        total_seconds: float = DEFAULT_TOTAL_SECONDS,
        safety_seconds: float = DEFAULT_SAFETY_SECONDS,
        n_problems: int = DEFAULT_PROBLEMS,
        started_at: float | None = None,
        engine: Engine | None = None,
        verbose: bool = False,
        **options,
    ) -> None:
        from .models import resolve_model

        already = time.time() - started_at if started_at is not None else 0.0
        self.deadline = clock() - already + total_seconds - safety_seconds
        self.problems_left = max(1, n_problems)
        self.config = RunConfig(model=model, **options)
        self.stats = AdapterStats()
        if engine is None:
            path = resolve_model(model)
            engine = Engine(path, **engine_kwargs(self.config, resolve_batch_size(self.config, path), verbose=verbose))
        self.engine = engine
        for note in engine.info.notes:
            _log(note)

    def seconds_left(self) -> float:
        return self.deadline - clock()

    def solve(self, problem_id: str, problem: str) -> int:
        """The answer to one problem, within its share of the time left. May raise."""
        start = clock()
        share = max(0.0, self.deadline - start) / self.problems_left
        self.problems_left = max(1, self.problems_left - 1)
        results = list(solve([Problem(id=problem_id, problem=problem)], self.engine, self.config,
                             deadline=start + share))
        seconds = clock() - start
        self.stats.seconds.append(round(seconds, 3))
        if not results:  # no time to start it at all
            self.stats.fallbacks += 1
            _log(f"{problem_id}: no time left: answer {self.config.fallback_answer} (fallback)")
            return self.config.fallback_answer
        r = results[0]
        self.stats.answered += not r.fallback
        self.stats.fallbacks += r.fallback
        self.stats.cut += r.cut
        note = " (fallback)" if r.fallback else f", {r.votes}/{r.samples} votes"
        _log(f"{problem_id}: answer {r.answer}{note} in {seconds:.1f} s of {share:.1f} s"
             + (" (cut)" if r.cut else "") + f"; {self.seconds_left() / 60:.1f} min left")
        return r.answer

    def predict(self, id_, problem):
        """The gateway's call: one-row Series (polars or pandas) or plain values in, one-row DataFrame out.

        Never raises: a failure is logged and answered with the fallback.
        """
        self.stats.problems += 1
        problem_id = "?"
        answer = self.config.fallback_answer
        try:
            problem_id = str(_scalar(id_))
            answer = self.solve(problem_id, str(_scalar(problem)))
        except Exception as e:  # noqa: BLE001 - a failed problem must not end the submission
            self.stats.failures += 1
            _log(f"{problem_id}: failed ({type(e).__name__}: {e}): answer {answer} (fallback)")
            traceback.print_exc(file=sys.stderr)
        answer = min(max(int(answer), ANSWER_RANGE[0]), ANSWER_RANGE[1])
        return _frame(problem_id, answer)

    def close(self) -> None:
        self.engine.close()


def _scalar(value):
    """The single value of a one-row polars/pandas Series, a one-item list, or the value itself."""
    if isinstance(value, (str, int)):
        return value
    if hasattr(value, "item") and hasattr(value, "__len__") and not isinstance(value, (bytes, dict)):
        if len(value) != 1:
            raise ValueError(f"expected one row, got {len(value)}")
        if hasattr(value, "iloc"):  # pandas
            return value.iloc[0]
        return value.item()
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"expected one value, got {len(value)}")
        return value[0]
    return value


def _frame(problem_id: str, answer: int):
    try:
        import polars as pl

        return pl.DataFrame({"id": [problem_id], "answer": [answer]})
    except ImportError:
        import pandas as pd

        return pd.DataFrame({"id": [problem_id], "answer": [answer]})


def _log(message: str) -> None:
    print(f"aimo-gguf: {message}", file=sys.stderr, flush=True)
