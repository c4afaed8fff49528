"""The AIMO3 inference-server adapter: one problem at a time, inside a total time budget.

The competition's gateway calls ``predict`` once per problem with every
column of the row as its own argument (one-row polars Series: ``id``,
``problem``, and ``answer`` when validating on ``reference.csv``), and wants a
one-row DataFrame with ``id`` and an integer ``answer`` back. ``KaggleSolver``
loads the model once, gives each problem the time left divided by the
problems still to come (time a problem does not use goes to the later ones),
and never raises from ``predict``: any failure is logged and answered with
the fallback. When the row carries its answer, ``stats`` keeps the local
accuracy.

The gateway's relay takes only plain functions and routes each call by the
function's name, so hand it ``solver.predict_function()`` (a function named
``predict``), not the bound method ``solver.predict``. The notebook
(``notebooks/aimo3_submission.ipynb``, the same code as the README)::

    import os, time
    START = time.time()  # the notebook's start: the model load counts against the budget
    WHEELS = "/kaggle/input/aimo-gguf-wheels"  # scripts/kaggle_wheelhouse.sh's folder, uploaded as a dataset
    MODEL = "/kaggle/input/my-model/DeepSeek-R1-Distill-Qwen-14B-Q4_K_M.gguf"
    DATA = "/kaggle/input/ai-mathematical-olympiad-progress-prize-3/test.csv"  # or reference.csv: accuracy
    OPTIONS = dict(n_gpu_layers=-1, samples=8, batch_size=32, max_tokens=12000, ctx=13000,
                   temperature=0.6, early_stop_votes=4)

    import importlib.util, subprocess, sys
    if importlib.util.find_spec("aimo_gguf") is None:  # offline: install from the wheelhouse dataset
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--find-links", WHEELS, "aimo-gguf[kaggle]"], check=True)

    import kaggle_evaluation.aimo_3_inference_server
    from aimo_gguf.kaggle import KaggleSolver

    solver = KaggleSolver(MODEL, started_at=START, **OPTIONS)
    server = kaggle_evaluation.aimo_3_inference_server.AIMO3InferenceServer(solver.predict_function())
    if os.getenv("KAGGLE_IS_COMPETITION_RERUN"):
        server.serve()
    else:
        server.run_local_gateway((DATA,))
        print(solver.stats)
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import make_config
from .engine.api import BatchEngine
from .errors import InputError
from .pipeline.problems import Problem
from .solving.solver import Clock, Solver
from .styles import style_for
from .styles.tir import ToolStats

DEFAULT_TOTAL_SECONDS = 5 * 3600  # AIMO3: five hours of GPU notebook
DEFAULT_SAFETY_SECONDS = 15 * 60  # kept back for the gateway, the model load and a slow last step
DEFAULT_PROBLEMS = 50
ANSWER_RANGE = (0, 99999)
EXTRA_SHARE_OF_LEFT = 0.5  # past the expected count, a problem gets at most this part of the time left
# The most tokens one engine step decodes here (the engine's default is 2048). The share is checked between
# steps, so a step that starts just before a problem's share ends overruns it by at most one step; 512 is
# llama.cpp's micro-batch, so a smaller step costs no speed.
DEFAULT_STEP_TOKENS = 512


@dataclass
class AdapterStats:
    """Counters of the problems served so far (no per-problem logs)."""

    problems: int = 0
    answered: int = 0  # answers from the model's vote
    fallbacks: int = 0  # no valid answer: the fallback was returned
    failures: int = 0  # an exception inside predict: logged, the fallback was returned
    empty: int = 0  # a null or blank problem: the fallback at once, the model not called
    too_long: int = 0  # prompts longer than the context: the fallback
    cut: int = 0  # problems whose time share ran out
    extra: int = 0  # calls beyond the n_problems the budget was planned for
    graded: int = 0  # calls whose row carried an answer (reference.csv)
    correct: int = 0  # graded calls answered correctly
    seconds: list[float] = field(default_factory=list)
    engine_crashes: int = 0  # deaths of the engine process (each answered, the next call on a fresh engine)
    tools: dict | None = None  # with tir: tool calls, ok / errors / timeouts, sandbox seconds (ToolStats)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


class KaggleSolver:
    """Loads a model once and solves one problem per call within a share of the total budget.

    ``options`` are RunConfig fields (``samples``, ``batch_size``, ``max_tokens``,
    ``temperature``, ``tir``, ...), as for ``aimo_gguf.pipeline.runner.run``. ``total_seconds``
    counts from ``started_at`` (a ``time.time()`` value, default now): pass the
    notebook's start time so the model load and imports are counted; one in the
    future, or older than ``total_seconds`` (a ``time.monotonic()`` value passed by
    mistake), is an error. ``clock`` (seconds, monotonic) is what the budget is
    measured on and ``wall_clock`` what ``started_at`` is read against; tests pass
    fake ones. ``step_tokens`` bounds one engine step (``DEFAULT_STEP_TOKENS``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        total_seconds: float = DEFAULT_TOTAL_SECONDS,
        safety_seconds: float = DEFAULT_SAFETY_SECONDS,
        n_problems: int = DEFAULT_PROBLEMS,
        started_at: float | None = None,
        engine: BatchEngine | None = None,
        verbose: bool = False,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        replicas: int = 1,
        step_tokens: int = DEFAULT_STEP_TOKENS,
        **options,
    ) -> None:
        if not (math.isfinite(total_seconds) and total_seconds > 0):
            raise InputError(f"total_seconds must be a positive number of seconds, got {total_seconds}")
        if not (math.isfinite(safety_seconds) and 0 <= safety_seconds < total_seconds):
            raise InputError(f"safety_seconds ({safety_seconds:g}) must be at least 0 and shorter than "
                             f"total_seconds ({total_seconds:g}): every problem would get no time")
        if n_problems < 1:
            raise InputError(f"n_problems must be at least 1, got {n_problems}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise InputError(f"replicas must be at least 1, got {replicas!r}")
        ray_only = sorted(k for k in ("ray", "gpus_per_replica") if options.get(k) is not None)
        if ray_only:
            raise InputError(f"{', '.join(ray_only)}: the adapter's replicas are engines in threads, one per GPU "
                             "(KaggleSolver(replicas=N)); Ray is for aimo-gguf run --ray")
        if step_tokens < 1:
            raise InputError(f"step_tokens must be at least 1, got {step_tokens}")
        already = _elapsed_since(started_at, wall_clock(), total_seconds)
        self.clock = clock
        self.deadline = clock() - already + total_seconds - safety_seconds
        self.n_problems = n_problems
        self.problems_left = n_problems
        self.planned_share = (total_seconds - safety_seconds) / n_problems
        self.config = make_config(model=model, **options)
        if not ANSWER_RANGE[0] <= self.config.fallback_answer <= ANSWER_RANGE[1]:
            raise InputError(f"fallback_answer {self.config.fallback_answer} is outside the competition's answers "
                             f"({ANSWER_RANGE[0]}..{ANSWER_RANGE[1]})")
        self.stats = AdapterStats()
        self.tool_stats = ToolStats() if self.config.tir else None
        self.served = None  # the engine in a child process (aimo_gguf.supervise.served), unless in_process
        if engine is None and not self.config.in_process:
            self._serve(model, verbose=verbose, replicas=replicas, step_tokens=step_tokens)
            return
        if engine is None and replicas > 1:
            from .fit.plan import load_engine_pool

            engine = load_engine_pool(self.config, replicas, verbose=verbose, token_budget=step_tokens)
        elif engine is None:
            from .fit.plan import load_engine
            from .gguf.files import resolve_model

            engine = load_engine(self.config, resolve_model(model), verbose=verbose, token_budget=step_tokens)
        self.engine = engine
        try:
            self.style = style_for(engine, self.config)  # once, for every predict: there it would fall back
        except BaseException:
            engine.close()
            raise
        for note in engine.info.notes:
            _log(note)

    def _serve(self, model: str | None, *, verbose: bool, replicas: int, step_tokens: int) -> None:
        """The engine in a child process that outlives a native crash: ``predict`` never loses the server."""
        from .gguf.files import resolve_model
        from .supervise.served import ServedEngine

        self.served = ServedEngine(self.config, resolve_model(model), verbose=verbose, token_budget=step_tokens,
                                   replicas=replicas, clock=self.clock)
        self.served.start()
        self.engine, self.prompt_style, self.tool_stats = None, self.served.prompt_style, self.served.tool_stats
        for note in self.served.info.notes:
            _log(note)

    def seconds_left(self) -> float:
        return self.deadline - self.clock()

    def _share(self, start: float) -> float:
        """This call's seconds: the time left over the problems still to come; past the expected
        count, at most the planned share and half of what is left, so later calls still get time."""
        left = max(0.0, self.deadline - start)
        if self.problems_left > 0:
            share = left / self.problems_left
            self.problems_left -= 1
            return share
        self.stats.extra += 1
        if self.stats.extra == 1:
            _log(f"more problems than the {self.n_problems} planned for: each extra one gets at most "
                 f"{self.planned_share:.0f} s (the planned share) or half of the time left")
        return min(self.planned_share, left * EXTRA_SHARE_OF_LEFT)

    def solve(self, problem_id: str, problem: str) -> int:
        """The answer to one problem, within its share of the time left. May raise."""
        start = self.clock()
        share = self._share(start)
        crashes = self.served.crashes if self.served is not None else 0
        try:
            results = self._results(Problem(id=problem_id, problem=problem), deadline=start + share)
        finally:
            if self.tool_stats is not None:
                self.stats.tools = self.tool_stats.to_dict()
        seconds = self.clock() - start
        self.stats.seconds.append(round(seconds, 3))
        if not results:  # no time to start it at all, or the engine died on it
            self.stats.fallbacks += 1
            why = "no time left" if self.served is None or self.served.crashes == crashes else "no result"
            if self.served is not None and self.served.gone:
                why = "no engine (its loads died, no more restarts)"
            _log(f"{problem_id}: {why}: answer {self.config.fallback_answer} (fallback)")
            return self.config.fallback_answer
        r = results[0]
        self.stats.answered += not r.fallback
        self.stats.fallbacks += r.fallback
        self.stats.cut += r.cut
        self.stats.too_long += r.too_long
        answer = min(max(r.answer, ANSWER_RANGE[0]), ANSWER_RANGE[1])  # what the gateway gets, and the log says
        note = " (fallback)" if r.fallback else f", {r.votes}/{r.samples} votes"
        note += f" (clamped from {r.answer})" if answer != r.answer else ""
        _log(f"{problem_id}: answer {answer}{note} in {seconds:.1f} s of {share:.1f} s"
             + (" (cut)" if r.cut else "") + f"; {self.seconds_left() / 60:.1f} min left")
        return answer

    def _results(self, problem: Problem, *, deadline: float) -> list:
        """The problem's result (none: no time, or the engine process died on it), here or in the child."""
        if self.served is not None:
            result = self.served.solve(problem, deadline=deadline)
            self.stats.engine_crashes = self.served.crashes
            return [] if result is None else [result]
        solver = Solver(self.engine, self.config, deadline=deadline, tool_stats=self.tool_stats, clock=self.clock,
                        style=self.style)
        return list(solver.solve([problem]))

    def predict(self, id_=None, problem=None, *columns, **named):
        """The gateway's call: one-row Series (polars or pandas) or plain values in, one-row DataFrame out.

        Further columns of the row (``answer`` in ``reference.csv``) are accepted; a
        known answer is only counted (``stats.graded``, ``stats.correct``). A null or
        blank problem is answered with the fallback at once (``stats.empty``).
        Never raises: a failure is logged and answered with the fallback.
        """
        self.stats.problems += 1
        problem_id = "?"
        answer = self.config.fallback_answer
        try:
            problem_id = str(_scalar(id_))
            text = _scalar(problem)
            if _is_null(text) or not str(text).strip():
                self.stats.empty += 1
                _log(f"{problem_id}: the problem is {'null' if _is_null(text) else 'empty'}: "
                     f"answer {answer} (fallback)")
            else:
                answer = self.solve(problem_id, str(text))
        except Exception as e:  # noqa: BLE001 - a failed problem must not end the submission
            self.stats.failures += 1
            _log(f"{problem_id}: failed ({type(e).__name__}: {e}): answer {answer} (fallback)")
            traceback.print_exc(file=sys.stderr)
        answer = min(max(int(answer), ANSWER_RANGE[0]), ANSWER_RANGE[1])
        expected = _known_answer(columns, named)
        if expected is not None:
            self.stats.graded += 1
            self.stats.correct += answer == expected
        return _frame(problem_id, answer)

    def predict_function(self) -> Callable[..., object]:
        """``predict`` as kaggle_evaluation's relay takes it: a plain function named ``predict``.

        The relay refuses anything but a function (``types.FunctionType``: a bound
        method such as ``solver.predict`` fails with "Endpoint listeners passed to
        `serve` must be functions") and routes the gateway's calls by ``__name__``.
        """
        solver = self

        def predict(*columns, **named):
            return solver.predict(*columns, **named)

        return predict

    def close(self) -> None:
        if self.served is not None:
            self.served.close()
        else:
            self.engine.close()


def _elapsed_since(started_at: float | None, now: float, total_seconds: float) -> float:
    """Seconds between ``started_at`` (a ``time.time()`` value) and ``now``; a value in the future, or one
    from before the budget began (a ``time.monotonic()`` value passed by mistake), is an InputError."""
    if started_at is None:
        return 0.0
    if isinstance(started_at, bool) or not isinstance(started_at, (int, float)) or not math.isfinite(started_at):
        raise InputError(f"started_at must be a time.time() value, got {started_at!r}")
    already = now - started_at
    if already < -1.0:  # a second of slack for clocks read a moment apart
        raise InputError(f"started_at is {-already:.0f} s in the future: pass time.time() taken at the "
                         "notebook's start")
    if already >= total_seconds:
        raise InputError(f"started_at is {already:.0f} s ago, more than total_seconds ({total_seconds:g}): pass "
                         "time.time() taken at the notebook's start (not time.monotonic() or time.perf_counter())")
    return max(0.0, already)


def _known_answer(columns: tuple, named: dict) -> int | None:
    """The ``answer`` among the extra columns (a Series named answer, or the answer= keyword), if any."""
    candidates = [named["answer"]] if "answer" in named else [c for c in columns if getattr(c, "name", None) == "answer"]
    if not candidates and len(columns) == 1 and not hasattr(columns[0], "name"):
        candidates = list(columns)  # a plain third value: the answer column
    for value in candidates:
        try:
            return int(_scalar(value))
        except (TypeError, ValueError, OverflowError):  # null, NaN, text, inf: nothing to grade against
            return None
    return None


def _is_null(value) -> bool:
    """A missing cell: None (polars), or NaN (pandas reads an empty cell of any column as NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


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
