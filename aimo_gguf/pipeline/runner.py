"""``run``: a problems file in, a submission and a summary out, with nothing lost on the way.

Before the model loads, every output is checked: none may name the input,
the model or another output, and each location must take a file. Then the
journal is opened (and locked), the engine loaded, and the ``Solver`` run;
each decided problem goes to the journal at once. Ctrl-C, SIGTERM or SIGHUP stops the
solving, never the writing: the answers that finished, the fallback for the
rest, and the summary are written, and the exit code says which signal it was.
An error while solving (every Ray replica lost, llama.cpp failing) is written
the same way, then raised. The files are written before the engine or the
replicas are ended, so a slow shutdown cannot cost them.
"""

from __future__ import annotations

import contextlib
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..config import RunConfig, make_config
from ..engine.api import BatchEngine, EngineStats, LoadInfo
from ..engine.limits import check_context
from ..errors import AimoError, InputError, OutputError
from ..gguf.parts import model_paths
from ..outputs import TraceWriter, check_distinct, check_file_name, check_writable
from ..solving.metrics import add_at_k
from ..solving.solver import Clock, ProblemResult, Solver
from ..solving.voting import VOTE_MODES
from ..styles import style_for
from ..styles.tir import ToolStats
from .interrupt import EXIT_CODES, Stopped, quiet_failures, stop_signals
from .journal import Journal, default_journal, fingerprint
from .problems import (
    BUNDLED_SETS,
    Problem,
    read_problems,
    write_json_atomic,
    write_submission,
)
from .progress import ProgressBar
from .summary import RunSummary, peak_rss_mb

if TYPE_CHECKING:
    from ..fit.plan import LoadPlan

DEFAULT_OUTPUT = "submission.csv"
KEEP_RESULTS = 50  # runs this small keep their ProblemResults for the end-of-run table


@dataclass
class RunResult:
    """What ``run`` returns: the submission rows in input order and the summary."""

    answers: list[tuple[str, int]]
    summary: RunSummary
    results: list[ProblemResult] = field(default_factory=list)  # kept only for small runs (see KEEP_RESULTS)

    @property
    def exit_code(self) -> int:
        """0, or 130 / 143 / 129 when Ctrl-C / SIGTERM / SIGHUP stopped the run."""
        if not self.summary.interrupted:
            return 0
        return EXIT_CODES.get(getattr(signal, self.summary.stopped_by or "SIGINT", signal.SIGINT), 130)


def run(
    problems: str | Path | Sequence[Problem] | None = None,
    *,
    output: str | Path | None = DEFAULT_OUTPUT,
    summary: str | Path | None = None,
    traces: str | Path | None = None,
    journal: str | Path | bool | None = None,
    resume: bool = False,
    progress: bool = True,
    verbose: bool = False,
    on_result: Callable[[ProblemResult], None] | None = None,
    config: RunConfig | None = None,
    engine: BatchEngine | None = None,
    clock: Clock = time.monotonic,
    **options,
) -> RunResult:
    """Solve a problems file (or the bundled sample set) and write the submission.

    ``options`` are RunConfig fields, named like the CLI flags
    (``n_gpu_layers=40``, ``batch_size=16``). ``engine``: an engine already
    loaded (``config.model`` is then only recorded); otherwise one is loaded
    from ``config`` and closed at the end. Ctrl-C, SIGTERM and SIGHUP stop the run but
    still write every answer that finished and the fallback for the rest.

    Each finished problem goes to a journal (``journal``: a path, or by
    default ``<output stem>.journal.jsonl`` beside the output; False for none);
    ``resume`` skips the problems the journal holds. With ``time_limit`` the
    clock starts here, model load included.
    """
    t0 = clock()
    config = config or make_config(**options)
    deadline = t0 + config.time_limit - config.margin if config.time_limit else None
    problems, model_path, journal, plan = _prepare(problems, engine, config, output=output, summary=summary,
                                             traces=traces, journal=journal, resume=resume)
    outcome = _Outcome(problems, config)
    log = None
    failure: AimoError | None = None
    # Two stacks: the files (journal, traces) close before the results are written, the engine or the
    # replicas (``engines``) only after, so ending them (ray.shutdown takes seconds) comes last.
    with quiet_failures(), stop_signals() as stop, contextlib.ExitStack() as engines:
        try:
            with contextlib.ExitStack() as files:
                log = files.enter_context(Journal(journal, fingerprint(config, model_path), resume=resume)) \
                    if journal else None
                tracer = files.enter_context(TraceWriter(traces, append=resume)) if traces is not None else None
                if log is not None and log.entries:
                    print(f"aimo-gguf: resuming: {len(log.entries)} problems already in {log.path}", file=sys.stderr)
                source = _open_source(engines, engine, config, model_path, graded=any(
                    p.answer is not None for p in problems), traces=traces is not None, verbose=verbose,
                    deadline=deadline, clock=clock, plan=plan)
                stop.check()  # a signal during the load may have landed in a C callback, where it cannot raise
                try:
                    outcome.solve(source, log, tracer, progress=progress, on_result=on_result, deadline=deadline,
                                  clock=clock, safe_point=stop.check)
                except AimoError as e:
                    failure = e  # what finished is still written (a failure never loses the others); raised below
                stop.disarm()  # every answer is in: from here on nothing may cut the writing short
        except (KeyboardInterrupt, Stopped) as e:
            stop.disarm()
            outcome.stopped(e.name if isinstance(e, Stopped) else "SIGINT")
        stop.disarm()
        if failure is not None:
            outcome.failed(failure)
        elif stop.signum is not None and not outcome.summary.interrupted:
            print(f"aimo-gguf: {stop.name} arrived after the last problem: writing the results", file=sys.stderr)
        result = outcome.write(output, summary, journal=log)
    if failure is not None:
        raise failure
    return result


def _prepare(problems, engine: BatchEngine | None, config: RunConfig, *, output, summary, traces, journal,
             resume: bool) -> tuple[Sequence[Problem], Path, str | Path | None, LoadPlan | None]:
    """Before any load: the problems read, the model found, the journal named, every output checked
    (one line for each thing wrong). Returns the problems, the model's path, the journal's and the
    load plan (None with an engine given or with --ray, where each replica plans on its node)."""
    source = None
    if not isinstance(problems, (list, tuple)):
        source = None if problems is None or problems in BUNDLED_SETS else Path(problems)
        problems = read_problems(problems)
    if engine is None:
        from ..gguf.files import resolve_model

        model_path = resolve_model(config.model)
    else:
        model_path = Path(engine.info.model_path)
    if output is not None:
        check_file_name(output, "the submission")  # before the journal's default name is made from it
    if journal is None or journal is True:
        journal = default_journal(output) if output is not None else None
    if resume and not journal:
        raise InputError("--resume needs a journal: give --journal or an --output to put it beside")
    if config.ray is not None:
        if engine is not None:
            raise InputError("--ray starts its own replicas: it takes no engine")
        from ..replicas import require_ray

        require_ray()  # the one-line error naming the extra, before any file is touched
    _check_outputs(source, model_path, output=output, summary=summary, traces=traces, journal=journal or None)
    if engine is None and config.ray is None and not config.in_process:
        from ..supervise.faults import Fault

        Fault.check_env()  # a test hook found in a real environment is said, a bad one refused
    plan = None  # before any load: a context llama.cpp or the model cannot hold is one line
    if engine is None and config.ray is None:
        from ..fit.plan import plan_load

        plan = plan_load(config, model_path)
    elif engine is None:  # each replica plans its own load, on its node
        check_context(model_path, ctx=config.sequence_ctx, batch_size=config.batch_size if isinstance(
            config.batch_size, int) else 1, what=config.ctx_source)
    return problems, model_path, journal, plan


def _open_source(engines: contextlib.ExitStack, engine: BatchEngine | None, config: RunConfig, model_path: Path, *,
                 graded: bool, traces: bool, verbose: bool, deadline: float | None, clock: Clock,
                 plan: LoadPlan | None = None) -> ResultSource:
    """Where the results come from: the engine given, replicas on Ray, the engine in a supervised child
    process (``aimo_gguf.supervise``), or, with --in-process, one loaded here. Ended by ``engines``."""
    if engine is not None:
        return LocalSource(engine, config)
    if config.ray is not None:
        from ..replicas import RayReplicas

        return engines.enter_context(RayReplicas(config, model_path, verbose=verbose, graded=graded, traces=traces,
                                                 deadline=deadline, clock=clock))
    if not config.in_process:
        from ..supervise.source import SupervisedSource

        return engines.enter_context(SupervisedSource(config, model_path, verbose=verbose, graded=graded,
                                                      traces=traces, deadline=deadline, clock=clock, plan=plan))
    from ..fit.plan import load_engine

    engine = engines.enter_context(load_engine(config, model_path, verbose=verbose, graded=graded, traces=traces,
                                               plan=plan))
    return LocalSource(engine, config)


def _check_outputs(source: Path | None, model: Path, **outputs) -> None:
    """Before the model loads: distinct files, each location writable."""
    labels = {"output": "--output", "summary": "--summary", "traces": "--traces", "journal": "--journal"}
    paths = {"the problems file": source, **model_paths(model)}
    paths.update({labels[name]: path for name, path in outputs.items()})
    check_distinct(paths, outputs=set(labels.values()))
    for name, path in outputs.items():
        if path is not None:
            check_writable(path, labels[name].removeprefix("--"), replace=name in ("output", "summary"))


class ResultSource(Protocol):
    """Where a run's results come from: one engine and its Solver (``LocalSource``), or replicas on Ray
    (``aimo_gguf.replicas.dispatch.Dispatcher``, from ``RayReplicas``). The runner journals, counts and writes
    them alike."""

    info: LoadInfo  # what was loaded (one replica's, with Ray)
    stats: EngineStats  # the engines' counters, summed over replicas
    failures: int  # replicas lost and replaced
    prompt_style: str  # the prompt family the Solvers use (harmony, think, plain)
    crashes: int  # engine processes that died (the supervised engine process; 0 elsewhere)
    lost: int  # problems given the fallback for being in flight at two of those deaths
    peak_rss_mb: float  # the peak resident memory of the process holding the engine, when it is not this one

    def results(self, problems: Sequence[Problem], *, deadline: float | None, clock: Clock, on_step, tracer,
                tool_stats: ToolStats | None, margin: float) -> Iterator[ProblemResult]: ...

    def final_counters(self) -> None: ...

    def replica_rows(self) -> list[dict] | None: ...

    def progress_note(self) -> str: ...


class LocalSource:
    """One engine and the Solver on it."""

    failures = crashes = lost = 0
    peak_rss_mb = 0.0  # the engine is in this process: the summary measures it here

    def __init__(self, engine: BatchEngine, config: RunConfig) -> None:
        self.engine, self.config = engine, config
        self.info = engine.info
        self.style = style_for(engine, config)  # once per run; a family the model cannot take fails here
        self.prompt_style = self.style.name

    @property
    def stats(self) -> EngineStats:
        """Read each time: an engine's ``stats`` may be a snapshot computed on access (an EnginePool's)."""
        return self.engine.stats

    def results(self, problems, *, deadline, clock, on_step, tracer, tool_stats, margin=0.0):
        solver = Solver(self.engine, self.config, traces=tracer, on_step=on_step, deadline=deadline,
                        tool_stats=tool_stats, clock=clock, style=self.style)
        return solver.solve(problems)

    def final_counters(self) -> None:
        pass

    def replica_rows(self) -> None:
        return None

    def progress_note(self) -> str:
        return ""


class _Outcome:
    """The answers and counters of one run while it goes, and the files they end in."""

    def __init__(self, problems: Sequence[Problem], config: RunConfig) -> None:
        self.problems = problems
        self.config = config
        self.answers: list[int | None] = [None] * len(problems)
        self.results: list[ProblemResult] = []
        self.summary = RunSummary(problems=len(problems), samples_per_problem=config.samples,
                                  max_tokens=config.max_tokens, time_limit=config.time_limit, vote=config.vote)
        self.modes: tuple[str, ...] = VOTE_MODES  # the vote modes whose accuracy is counted
        self.seconds: list[float] = []  # per problem: a float each, the only per-problem state a long run keeps
        self.budgets: list[float] = []
        self.deadline: float | None = None
        self.t_start = time.perf_counter()
        self.engine_rss_mb = 0.0  # the engine process's peak memory, where the engine is not in this process

    def solve(self, source: ResultSource, log: Journal | None, tracer: TraceWriter | None, *, progress: bool,
              on_result, deadline: float | None, clock: Clock, safe_point=None) -> None:
        config, summary = self.config, self.summary
        self.deadline = deadline
        info = source.info
        summary.model, summary.model_description = info.model_path, info.description
        summary.n_gpu_layers_requested, summary.n_gpu_layers = info.n_gpu_layers_requested, info.n_gpu_layers
        summary.gpu_offload_supported, summary.notes = info.gpu_offload_supported, list(info.notes)
        summary.repack = info.repack
        summary.batch_size, summary.ctx, summary.threads = info.n_seq_max, info.n_ctx_seq, info.threads
        summary.load_seconds = info.load_seconds
        for note in info.notes:
            print(f"aimo-gguf: {note}", file=sys.stderr)
        # Without confidence every vote weighs 1: the other modes would only repeat majority.
        self.modes = VOTE_MODES if info.confidence else ("majority",)
        todo = self._take_journaled(log.entries if log is not None else {})
        bar = ProgressBar(len(self.problems), source, summary, enabled=progress)
        self.tool_stats = ToolStats() if config.tir else None

        def on_step() -> None:
            if safe_point is not None:
                safe_point()
            bar.refresh()

        summary.prompt_style = source.prompt_style
        self.t_start = time.perf_counter()
        try:
            for result in source.results([self.problems[i] for i in todo], deadline=deadline, clock=clock,
                                         on_step=on_step, tracer=tracer, tool_stats=self.tool_stats,
                                         margin=config.margin):
                result = replace(result, index=todo[result.index])
                self.answers[result.index] = result.answer
                if log is not None and not (result.cut and result.samples == 0):
                    log.append(result)  # a problem cut before any sample finished is retried by --resume
                self._count(result)
                if on_result is not None:
                    on_result(result)
                bar.advance()
        finally:
            try:
                bar.close()
            finally:
                self._collect(source)

    def _take_journaled(self, earlier: dict) -> list[int]:
        """Answers from an earlier run's journal; returns the positions still to solve."""
        todo = []
        known = {f.name for f in fields(ProblemResult)}
        for position, problem in enumerate(self.problems):
            entry = earlier.get(problem.id)
            if entry is None:
                todo.append(position)
                continue
            result = ProblemResult(**{k: v for k, v in entry.items() if k in known and k != "index"}, index=position)
            self.answers[position] = result.answer
            self.summary.resumed += 1
            self._count(result, resumed=True)
        return todo

    def _count(self, result: ProblemResult, *, resumed: bool = False) -> None:
        s = self.summary
        s.problems_done += 1
        s.samples += result.samples
        if not result.too_long:
            s.samples_skipped += self.config.samples - result.samples
        s.valid_answers += result.valid
        s.majority += result.majority
        s.early_stopped += result.early_stopped
        s.cut += result.cut
        s.fallbacks += result.fallback
        s.too_long += result.too_long
        s.low_confidence += result.low_confidence
        s.answer_tokens += result.tokens
        s.answers_final += result.answers_final
        s.answers_fallback += result.answers_fallback
        s.capped += result.capped
        s.capped_answered += result.capped_answered
        if result.correct is not None:
            expected = self.problems[result.index].answer
            s.graded += 1
            s.correct += result.correct
            voters = result.samples - result.low_confidence
            if voters > 0:
                s.pass_at_1_sum += result.sample_correct / voters
            s.pass_at_n += result.sample_correct > 0
            fallback = self.config.fallback_answer
            answers = result.mode_answers or {}
            for mode in self.modes:
                answer = answers.get(mode)
                right = (fallback if answer is None else answer) == expected
                s.mode_correct[mode] = s.mode_correct.get(mode, 0) + right
            s.capped_graded += result.capped
            s.capped_correct += result.capped_correct
            s.correct_without_capped += bool(result.correct_without_capped)
            add_at_k(s.at_k, result.at_k, samples=self.config.samples)
        if not resumed:
            self.seconds.append(result.seconds)
            if result.budget is not None:
                self.budgets.append(result.budget)
        if len(self.problems) <= KEEP_RESULTS:
            self.results.append(result)

    def _collect(self, source: ResultSource) -> None:
        """The engine's and the tools' counters into the summary."""
        source.final_counters()
        s, stats = self.summary, source.stats
        s.replicas, s.replica_failures = source.replica_rows(), source.failures
        s.engine_crashes, s.problems_lost_to_crashes = source.crashes, source.lost
        self.engine_rss_mb = source.peak_rss_mb
        if s.engine_crashes:
            info = source.loaded_info  # a SIGILL restart turned repacking off
            s.repack, s.notes = info.repack, list(info.notes)
        s.run_seconds = time.perf_counter() - self.t_start
        s.prompt_tokens = stats.prompt_tokens
        s.shared_prompt_tokens = stats.shared_prompt_tokens
        s.generated_tokens = stats.generated_tokens
        s.decode_seconds = stats.decode_seconds
        s.sample_seconds = stats.sample_seconds
        s.kv_preemptions = stats.kv_preemptions
        s.finish_reasons = dict(sorted(stats.finish_reasons.items()))
        if self.tool_stats is not None:
            s.tools = self.tool_stats.to_dict()
            s.tools["injected_tokens"] = stats.injected_tokens

    def stopped(self, signal_name: str) -> None:
        self.summary.interrupted = True
        self.summary.stopped_by = signal_name
        print(f"aimo-gguf: stopped by {signal_name}: writing the finished answers and the fallback for the rest",
              file=sys.stderr, flush=True)

    def failed(self, error: AimoError) -> None:
        """An error ended the solving: the summary says so as it would a signal, with the error as the reason."""
        self.summary.interrupted = True
        self.summary.stopped_by = f"{type(error).__name__}: {error}"
        print(f"aimo-gguf: stopped by {type(error).__name__}: writing the finished answers and the fallback for "
              f"the rest", file=sys.stderr, flush=True)

    def write(self, output, summary_path, *, journal: Journal | None) -> RunResult:
        """The submission (input order, fallbacks for the unanswered) and the summary."""
        s, config = self.summary, self.config
        missing = sum(a is None for a in self.answers)
        s.not_started = missing - s.problems_lost_to_crashes if self.deadline is not None and not s.interrupted \
            else 0
        s.fallbacks += missing
        s.problem_seconds = _spread(self.seconds)
        s.budget_seconds = _spread(self.budgets)
        s.peak_rss_mb = max(peak_rss_mb(), self.engine_rss_mb)  # the engine process's, by default
        rows = [(p.id, config.fallback_answer if a is None else a) for p, a in zip(self.problems, self.answers)]
        failure = None
        if output is not None:
            try:
                write_submission(output, rows)
            except OutputError as e:
                keeps = journal is not None and journal.intact and (journal.written or journal.entries)
                hint = f"; the answers are in the journal {journal.path}: rerun with --resume" if keeps else ""
                failure = OutputError(f"{e}{hint}")
        if summary_path is not None:
            try:
                write_json_atomic(summary_path, s.to_dict())
            except OutputError as e:
                if failure is None:
                    raise
                print(f"aimo-gguf: warning: {e}", file=sys.stderr)  # the submission's error matters more
        if failure is not None:
            raise failure
        self.results.sort(key=lambda r: r.index)
        return RunResult(answers=rows, summary=s, results=self.results)


def _spread(values: list[float]) -> dict[str, float] | None:
    """min / median / max, rounded; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return {"min": round(ordered[0], 3), "median": round(statistics.median(ordered), 3), "max": round(ordered[-1], 3)}
