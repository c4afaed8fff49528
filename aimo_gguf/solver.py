"""``run``: problems in, a submission and a summary out.

The solver feeds the engine one problem's samples after another, lazily, so a
slot that frees up takes the next sample at once. Each finished sample is
voted on; a problem whose winner can no longer change has its other samples
cancelled and skipped, and their slots go to the next problems.

Only what a problem needs while it is in flight is kept (its token ids, its
tally, its live requests); a finished problem leaves one integer behind.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TextIO

from .answers import extract_answer
from .config import RunConfig
from .engine import FINISH_CANCELLED, FINISH_TOO_LONG, Completion, Engine, Request, SamplingParams
from .errors import InputError
from .journal import Journal, default_journal, fingerprint
from .problems import Problem, read_problems, write_json_atomic, write_submission
from .prompts import DEFAULT_SYSTEM_PROMPT, RAW_PROMPT_STOPS, chat_prompt, raw_prompt
from .summary import RunSummary, peak_rss_mb
from .tir import TIR_SYSTEM_PROMPT, PythonTool, ToolStats, tir_answer
from .voting import Tally

DEFAULT_OUTPUT = "submission.csv"
PROGRESS_INTERVAL = 0.5  # seconds between progress-bar refreshes inside a long problem, in a terminal
PROGRESS_INTERVAL_LOG = 10.0  # the same when stderr is a log (a Kaggle notebook): a line each time


@dataclass(frozen=True, slots=True)
class ProblemResult:
    """The outcome of one problem."""

    index: int  # position in the input
    id: str
    answer: int  # the winner, or the fallback answer
    votes: int  # samples that voted for the answer (0 for a fallback)
    valid: int  # samples with a valid answer
    samples: int  # samples that ran to an end
    fallback: bool  # no valid answer: the fallback was written
    too_long: bool  # the prompt did not fit the context
    early_stopped: bool  # sampling stopped once the vote was decided
    majority: bool  # the winner has a strict majority of the finished samples
    correct: bool | None  # None when the answer is unknown
    cut: bool = False  # its time budget ran out: unfinished samples were cut
    seconds: float = 0.0  # from its first sample's start to its answer
    budget: float | None = None  # seconds it was given (None without a time limit)


@dataclass
class RunResult:
    """What ``run`` returns: the submission rows in input order and the summary."""

    answers: list[tuple[str, int]]
    summary: RunSummary
    results: list[ProblemResult] = field(default_factory=list)  # kept only for small runs (see KEEP_RESULTS)


KEEP_RESULTS = 50  # runs this small keep their ProblemResults for the end-of-run table


def clock() -> float:
    """The solver's clock (seconds); tests replace it."""
    return time.perf_counter()


def sample_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """A sample's seed: the same for the same problem and sample, whatever the order or batch."""
    digest = hashlib.blake2b(f"{seed}:{problem_id}:{sample_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class _InFlight:
    """A problem whose samples are running."""

    __slots__ = ("index", "problem", "tally", "requests", "issued", "ended", "early_stopped", "cut", "start",
                 "deadline", "budget")

    def __init__(self, index: int, problem: Problem, n_samples: int) -> None:
        self.index = index
        self.problem = problem
        self.tally = Tally(n_samples)
        self.requests: dict[int, Request] = {}  # sample index -> live request
        self.issued = 0
        self.ended = 0  # samples that came back from the engine, cancelled ones included
        self.early_stopped = False
        self.cut = False  # out of time
        self.start = clock()
        self.deadline: float | None = None
        self.budget: float | None = None

    @property
    def stopped(self) -> bool:
        """No more samples will be issued."""
        return self.early_stopped or self.cut

    def cancel(self) -> None:
        for request in self.requests.values():
            request.cancelled = True


def build_prompt(engine: Engine, problem: Problem, config: RunConfig) -> list[int]:
    """The prompt's token ids for ``problem`` under ``config``."""
    return engine.tokenize(prompt_text(engine, problem, config))


def prompt_text(engine: Engine, problem: Problem, config: RunConfig) -> str:
    """The prompt for ``problem``: the model's chat template, or the raw format for base models.

    With --tir and the default system prompt, the system prompt invites Python.
    """
    system = config.system_prompt
    if config.tir and system == DEFAULT_SYSTEM_PROMPT:
        system = TIR_SYSTEM_PROMPT
    template = None if config.raw_prompt else engine.chat_template
    if template is None:
        return raw_prompt(problem.problem, system)
    return chat_prompt(
        problem.problem,
        template=template,
        system_prompt=system,
        bos_token=engine.bos_token,
        eos_token=engine.eos_token,
    )


def solve(
    problems: Sequence[Problem],
    engine: Engine,
    config: RunConfig,
    *,
    traces: TextIO | None = None,
    on_step: Callable[[], None] | None = None,
    deadline: float | None = None,
    tool_stats: ToolStats | None = None,
) -> Iterator[ProblemResult]:
    """Solve ``problems`` on ``engine``; yield each ProblemResult as it is decided.

    Results come in finishing order. Stopping the iteration (or an exception,
    Ctrl-C included) frees the engine's sequences.

    ``deadline`` (a ``time.perf_counter()`` value) bounds the whole call: each
    problem, when it starts, gets a share of the time left (so time a problem
    does not use goes to the ones after it); when its share runs out its
    unfinished samples are cut and it is voted on the samples that finished.
    At the deadline everything running is cut and no problem starts any more:
    problems never started get no result (the caller writes their fallback).

    With ``config.tir`` each sample runs its code blocks in its own sandbox
    worker (``aimo_gguf.sandbox``), counted in ``tool_stats``.
    """
    sampling = SamplingParams(
        temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, min_p=config.min_p
    )
    flights: dict[int, _InFlight] = {}
    done: list[ProblemResult] = []
    n_samples = config.samples
    parallel = max(1, engine.batch_size // n_samples)  # problems that run side by side
    finished = [0]
    out_of_time = [False]
    pool = None
    if config.tir:
        from .sandbox import SandboxLimits, SandboxPool

        pool = SandboxPool(SandboxLimits(timeout=config.tool_timeout, max_output=config.tool_output_chars))
        tool_stats = tool_stats if tool_stats is not None else ToolStats()
    weight = config.tir_weight if config.tir else 1.0

    def finish(flight: _InFlight, *, too_long: bool = False) -> None:
        flights.pop(flight.index, None)
        finished[0] += 1
        tally = flight.tally
        winner = tally.winner()
        fallback = winner is None
        answer = config.fallback_answer if fallback else winner
        expected = flight.problem.answer
        done.append(
            ProblemResult(
                index=flight.index,
                id=flight.problem.id,
                answer=answer,
                votes=0 if fallback else tally.counts[winner],
                valid=tally.valid,
                samples=tally.finished,
                fallback=fallback,
                too_long=too_long,
                early_stopped=flight.early_stopped,
                majority=not fallback and tally.has_majority(),
                correct=None if expected is None else answer == expected,
                cut=flight.cut,
                seconds=clock() - flight.start,
                budget=flight.budget,
            )
        )

    def give_budget(flight: _InFlight) -> None:
        left = deadline - flight.start
        waiting = len(problems) - finished[0]  # this one and every problem without an answer yet
        flight.budget = max(0.0, left * min(parallel, waiting) / waiting)
        flight.deadline = flight.start + flight.budget

    def check_time() -> None:
        if on_step is not None:
            on_step()
        now = clock()
        if now >= deadline:
            out_of_time[0] = True
        for flight in list(flights.values()):
            if not flight.cut and (out_of_time[0] or now >= flight.deadline):
                flight.cut = True
                flight.cancel()

    def requests() -> Iterator[Request]:
        for index, problem in enumerate(problems):
            if deadline is not None and clock() >= deadline:
                out_of_time[0] = True
            if out_of_time[0]:
                return
            text = prompt_text(engine, problem, config)
            tokens = engine.tokenize(text)
            flight = _InFlight(index, problem, n_samples)
            flight.tally.max_weight = weight
            flights[index] = flight
            if deadline is not None:
                give_budget(flight)
            if len(tokens) >= engine.n_ctx_seq:
                finish(flight, too_long=True)
                continue
            for j in range(n_samples):
                if flight.stopped:
                    break
                request = Request(
                    key=(index, j),
                    prompt=tokens,
                    max_tokens=config.max_tokens,
                    seed=sample_seed(config.seed, problem.id, j),
                    sampling=sampling,
                    prefix_key=index,
                    tool=None if pool is None else PythonTool(pool, (index, j), max_calls=config.max_tool_calls,
                                                              stats=tool_stats, prefix=text),
                )
                flight.requests[j] = request
                flight.issued += 1
                yield request
            if flight.ended == flight.issued and flight.index in flights:
                finish(flight)  # every issued sample already came back

    def record(completion: Completion) -> None:
        index, j = completion.request.key
        flight = flights[index]
        flight.requests.pop(j, None)
        flight.ended += 1
        reason = completion.finish_reason
        tool = completion.request.tool
        if tool is not None:
            pool.release(tool.key)  # the sample is over: its worker goes
        if reason != FINISH_CANCELLED:
            limits = dict(min_answer=config.min_answer, max_answer=config.max_answer, modulo=config.modulo)
            if tool is not None:
                answer = tir_answer(completion.text, tool.results, **limits)
            else:
                answer = extract_answer(completion.text, **limits)
            flight.tally.add(j, answer, weight if tool is not None and tool.all_ok else 1.0)
            if traces is not None:
                traces.write(
                    json.dumps(
                        {
                            "id": flight.problem.id,
                            "sample": j,
                            "answer": answer,
                            "finish_reason": reason,
                            "tokens": len(completion.tokens),
                            "text": completion.text,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                traces.flush()
            if not flight.stopped and flight.tally.remaining and _decided(flight.tally, config):
                flight.early_stopped = True
                flight.cancel()
        # Done once every sample that will ever be issued has come back; no need
        # to wait for the engine to pull the next request.
        if flight.ended == flight.issued and (flight.issued == n_samples or flight.stopped):
            finish(flight)

    step = check_time if deadline is not None else on_step
    try:
        yield from _drive(engine, requests(), step, flights, done, finish, record)
    finally:
        if pool is not None:
            pool.close()


def _drive(engine, requests, step, flights, done, finish, record) -> Iterator[ProblemResult]:
    for completion in engine.generate(requests, on_step=step):
        if completion.finish_reason == FINISH_TOO_LONG:
            # The engine's own guard; the solver normally catches long prompts first.
            index, _ = completion.request.key
            flight = flights.get(index)
            if flight is not None:
                flight.cancel()
                flight.requests.clear()
                finish(flight, too_long=True)
            continue
        if completion.request.key[0] in flights:
            record(completion)
        if done:
            yield from done
            done.clear()
    if done:
        yield from done
        done.clear()


def _decided(tally: Tally, config: RunConfig) -> bool:
    """Whether a problem's sampling can stop: the winner cannot change, or it has enough votes."""
    if config.early_stop and tally.decided():
        return True
    if config.early_stop_votes:
        leader = tally.winner()
        return leader is not None and tally.counts[leader] >= config.early_stop_votes
    return False


def _count(summary: RunSummary, result: ProblemResult, n_samples: int) -> None:
    summary.problems_done += 1
    summary.samples += result.samples
    if not result.too_long:
        summary.samples_skipped += n_samples - result.samples
    summary.valid_answers += result.valid
    summary.majority += result.majority
    summary.early_stopped += result.early_stopped
    summary.cut += result.cut
    summary.fallbacks += result.fallback
    summary.too_long += result.too_long
    if result.correct is not None:
        summary.graded += 1
        summary.correct += result.correct


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
    **options,
) -> RunResult:
    """Solve a problems file (or the bundled sample set) and write the submission.

    ``options`` are RunConfig fields, named like the CLI flags
    (``n_gpu_layers=40``, ``batch_size=16``). Ctrl-C stops the run but still
    writes every answer that finished and the fallback for the rest.

    Each finished problem goes to a journal (``journal``: a path, or by
    default ``<output stem>.journal.jsonl`` beside the output; False for none);
    ``resume`` skips the problems the journal holds. With ``time_limit`` the
    clock starts here, model load included.
    """
    t0 = clock()
    config = config or RunConfig(**options)
    deadline = t0 + config.time_limit - config.margin if config.time_limit else None
    if not isinstance(problems, (list, tuple)):
        problems = read_problems(problems)
    from .models import resolve_model

    model_path = resolve_model(config.model)
    if journal is None or journal is True:
        journal = default_journal(output) if output is not None else None
    if resume and not journal:
        raise InputError("--resume needs a journal: give --journal or an --output to put it beside")
    engine_options = engine_kwargs(config, resolve_batch_size(config, model_path), verbose=verbose)
    log = Journal(journal, fingerprint(config, model_path), resume=resume) if journal else None
    trace_file = None
    try:
        trace_file = _open_traces(traces, append=resume)
        if log is not None and log.entries:
            print(f"aimo-gguf: resuming: {len(log.entries)} problems already in {log.path}", file=sys.stderr)
        with Engine(model_path, **engine_options) as engine:
            return _run_loaded(problems, engine, config, output, summary, trace_file, progress, on_result,
                               journal=log, deadline=deadline)
    finally:
        if trace_file is not None:
            trace_file.close()
        if log is not None:
            log.close()


def engine_kwargs(config: RunConfig, batch_size: int, *, verbose: bool = False) -> dict:
    """The Engine keyword arguments a RunConfig stands for (model path aside)."""
    return dict(
        n_gpu_layers=config.n_gpu_layers,
        ctx=config.sequence_ctx,
        batch_size=batch_size,
        threads=config.threads,
        kv_unified=config.kv_unified,
        share_prompts=config.share_prompts,
        flash_attn=config.flash_attn,
        kv_type=config.kv_type,
        stop=config.stop + (RAW_PROMPT_STOPS if config.raw_prompt else ()),
        ignore_eos=config.ignore_eos,
        verbose=verbose,
    )


def resolve_batch_size(config: RunConfig, model_path: Path) -> int:
    """``config.batch_size``, with 'auto' replaced by the largest batch the memory budget holds."""
    if config.batch_size != "auto":
        return config.batch_size
    from .memory import format_bytes, largest_batch, parse_size, read_shape

    if config.max_memory is not None:
        budget = parse_size(config.max_memory)
    elif config.n_gpu_layers == 0:
        import psutil

        budget = int(0.8 * psutil.virtual_memory().available)
    else:
        raise InputError("--batch-size auto with GPU layers needs --max-memory (the GPU memory to fill)")
    batch = largest_batch(
        read_shape(str(model_path)),
        ctx=config.sequence_ctx,
        max_memory=budget,
        n_gpu_layers=config.n_gpu_layers,
        kv_type=config.kv_type,
    )
    where = "GPU" if config.n_gpu_layers else "CPU"
    print(f"aimo-gguf: --batch-size auto: {batch} sequences of {config.sequence_ctx} tokens fit "
          f"{format_bytes(budget)} of {where} memory", file=sys.stderr)
    return batch


def _open_traces(traces: str | Path | None, *, append: bool = False) -> TextIO | None:
    if traces is None:
        return None
    path = Path(traces)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a" if append else "w", encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write traces to {path}: {e.strerror or e}") from None


def _run_loaded(problems, engine, config, output, summary_path, trace_file, progress, on_result=None, *,
                journal=None, deadline=None) -> RunResult:
    info = engine.info
    summary = RunSummary(
        model=info.model_path,
        model_description=info.description,
        n_gpu_layers_requested=info.n_gpu_layers_requested,
        n_gpu_layers=info.n_gpu_layers,
        gpu_offload_supported=info.gpu_offload_supported,
        notes=list(info.notes),
        batch_size=info.n_seq_max,
        samples_per_problem=config.samples,
        max_tokens=config.max_tokens,
        ctx=info.n_ctx_seq,
        threads=info.threads,
        problems=len(problems),
        load_seconds=info.load_seconds,
        time_limit=config.time_limit,
    )
    for note in info.notes:
        print(f"aimo-gguf: {note}", file=sys.stderr)

    answers: list[int | None] = [None] * len(problems)
    results: list[ProblemResult] = []
    seconds, budgets = [], []  # per problem: a float each, the only per-problem state a long run keeps
    earlier = journal.entries if journal is not None else {}
    todo: list[int] = []  # positions of the problems to solve now
    for position, problem in enumerate(problems):
        entry = earlier.get(problem.id)
        if entry is None:
            todo.append(position)
            continue
        result = _from_journal(entry, position)
        answers[position] = result.answer
        summary.resumed += 1
        _count(summary, result, config.samples)
        if len(problems) <= KEEP_RESULTS:
            results.append(result)
    bar = _progress_bar(len(problems), enabled=progress, initial=summary.resumed)
    stats = engine.stats
    t_start = time.perf_counter()
    last_refresh = [0.0]
    interval = PROGRESS_INTERVAL if sys.stderr.isatty() else PROGRESS_INTERVAL_LOG

    def refresh() -> None:
        now = time.perf_counter()
        if bar is None or now - last_refresh[0] < interval:
            return
        last_refresh[0] = now
        elapsed = now - t_start
        bar.set_postfix_str(
            f"samples={summary.samples} tok/s={stats.generated_tokens / elapsed:.1f}", refresh=False
        )
        bar.refresh()

    tool_stats = ToolStats() if config.tir else None
    try:
        for result in solve([problems[i] for i in todo], engine, config, traces=trace_file,
                            on_step=refresh if bar else None, deadline=deadline, tool_stats=tool_stats):
            result = replace(result, index=todo[result.index])
            answers[result.index] = result.answer
            if journal is not None and not (result.cut and result.samples == 0):
                journal.append(result)  # a problem cut before any sample finished is retried by --resume
            _count(summary, result, config.samples)
            seconds.append(result.seconds)
            if result.budget is not None:
                budgets.append(result.budget)
            if len(problems) <= KEEP_RESULTS:
                results.append(result)
            if on_result is not None:
                on_result(result)
            if bar is not None:
                bar.update(1)
                refresh()
    except KeyboardInterrupt:
        summary.interrupted = True
        print("aimo-gguf: interrupted: writing finished answers, the fallback for the rest", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()

    summary.run_seconds = time.perf_counter() - t_start
    summary.not_started = sum(a is None for a in answers) if deadline is not None and not summary.interrupted else 0
    summary.fallbacks += sum(a is None for a in answers)
    summary.problem_seconds = _spread(seconds)
    if config.tir:
        summary.tools = tool_stats.to_dict()
        summary.tools["injected_tokens"] = stats.injected_tokens
    summary.budget_seconds = _spread(budgets)
    summary.prompt_tokens = stats.prompt_tokens
    summary.shared_prompt_tokens = stats.shared_prompt_tokens
    summary.generated_tokens = stats.generated_tokens
    summary.decode_seconds = stats.decode_seconds
    summary.sample_seconds = stats.sample_seconds
    summary.kv_preemptions = stats.kv_preemptions
    summary.finish_reasons = dict(sorted(stats.finish_reasons.items()))
    summary.peak_rss_mb = peak_rss_mb()

    rows = [(p.id, config.fallback_answer if a is None else a) for p, a in zip(problems, answers)]
    if output is not None:
        write_submission(output, rows)
    if summary_path is not None:
        write_json_atomic(summary_path, summary.to_dict())
    results.sort(key=lambda r: r.index)
    return RunResult(answers=rows, summary=summary, results=results)


def _progress_bar(total: int, *, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    interval = 0.1 if sys.stderr.isatty() else PROGRESS_INTERVAL_LOG
    return tqdm(total=total, initial=initial, unit="problem", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                mininterval=interval)


def _spread(values: list[float]) -> dict[str, float] | None:
    """min / median / max, rounded; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return {"min": round(ordered[0], 3), "median": round(statistics.median(ordered), 3), "max": round(ordered[-1], 3)}


def _from_journal(entry: dict, position: int) -> ProblemResult:
    known = {f.name for f in fields(ProblemResult)}
    return ProblemResult(**{k: v for k, v in entry.items() if k in known and k != "index"}, index=position)
