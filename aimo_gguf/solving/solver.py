"""The solver: problems in, one decided answer per problem out, on any ``BatchEngine``.

``Solver.solve`` feeds the engine one problem's samples after another,
lazily, so a slot that frees up takes the next sample at once. Each finished
sample is voted on (``--vote``: plain or confidence-weighted, see
``aimo_gguf.solving.voting``); a problem whose winner can no longer change (or that an
early-stop rule calls decided) has its other samples cancelled and never
issued, and their slots go to the next problems. With ``--stop-below`` the first
finished samples of a problem set a confidence threshold, and a later sample
that falls below it is cut by the engine and does not vote. Under a deadline
each problem gets a share of the time left when it starts (at most
``--problem-time-cap``), and is cut (voted on what finished) when it runs out.

Only what a problem needs while it is in flight is kept (its prompt, its
tally, its live requests); a finished problem leaves one ``ProblemResult``.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..config import RunConfig
from ..engine.api import (
    FINISH_CANCELLED,
    FINISH_KV_FULL,
    FINISH_LENGTH,
    FINISH_LOW_CONFIDENCE,
    FINISH_TOO_LONG,
    BatchEngine,
    Completion,
    Request,
    SamplingParams,
)
from ..errors import InputError
from ..pipeline.problems import Problem
from ..styles import PromptStyle, SampleTool, style_for
from ..styles.tir import ToolStats
from .metrics import problem_metrics
from .voting import Tally, Vote, every_mode, max_vote_weight, pick, vote_weight

Clock = Callable[[], float]


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
    budget: float | None = None  # seconds it was given (None without a time limit or cap)
    tokens: int = 0  # tokens its samples generated, cut and cancelled ones included
    sample_correct: int = 0  # finished samples whose own answer is the expected one
    low_confidence: int = 0  # samples cut by --stop-below (they do not vote)
    mode_answers: dict[str, int | None] | None = None  # the winner every vote mode picks from the same samples
    answers_final: int = 0  # samples answered in their final part (harmony's final channel, after </think>)
    answers_fallback: int = 0  # samples answered only from their analysis or thinking
    # Graded problems: pass@k, maj@k and --vote's @k by k in metrics.k_values(--samples) (aimo_gguf.solving.metrics).
    at_k: dict[str, list[float | None]] | None = None
    capped: int = 0  # samples that ended at the token limit (--max-tokens or the sequence's room)
    capped_answered: int = 0  # of them, those that stated an answer (only a stated one counts)
    capped_correct: int = 0  # of them, those whose answer is the expected one
    correct_without_capped: bool | None = None  # the vote's correctness had the capped samples not voted


class TraceSink(Protocol):
    """Where finished samples go with ``--traces`` (``aimo_gguf.outputs.TraceWriter``)."""

    def write(self, record: dict) -> None: ...


def sample_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """A sample's seed: the same for the same problem and sample, whatever the order or batch."""
    # surrogatepass: the same bytes as UTF-8 for every id UTF-8 can encode, and no error for one it cannot
    key = f"{seed}:{problem_id}:{sample_index}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key, digest_size=4).digest()
    return int.from_bytes(digest, "little")


def build_prompts(engine: BatchEngine, problems: Sequence[Problem], config: RunConfig) -> list[list[int]]:
    """Each problem's prompt token ids under ``config``, its family (``aimo_gguf.styles.style_for``) worked
    out once for them all."""
    style = style_for(engine, config)
    return [engine.tokenize(style.prompt(problem.problem)) for problem in problems]


def decided(tally: Tally, config: RunConfig, *, unanswered: int = 0) -> bool:
    """Whether a problem's sampling can stop: the winner cannot change (``tally.max_weight`` bounds what
    a sample still running can add), the winner (by weight, the answer that would be submitted) has
    --early-stop-votes votes or is --early-stop-lead votes ahead of every other answer, or
    --stop-unanswered samples ended without an answer."""
    if config.stop_unanswered and unanswered >= config.stop_unanswered:
        return True
    if config.early_stop and tally.decided():
        return True
    winner = tally.winner()
    if winner is None:
        return False
    count = tally.counts[winner]
    if config.early_stop_votes and count >= config.early_stop_votes:
        return True
    second = max((c for a, c in tally.counts.items() if a != winner), default=0)
    return bool(config.early_stop_lead) and count - second >= config.early_stop_lead


class _InFlight:
    """A problem whose samples are running."""

    __slots__ = ("index", "problem", "tally", "requests", "issued", "ended", "early_stopped", "cut", "start",
                 "deadline", "budget", "votes", "threshold", "warm", "unanswered", "low_confidence", "tokens",
                 "sample_correct", "answers_final", "answers_fallback")

    def __init__(self, index: int, problem: Problem, n_samples: int, max_weight: float, start: float) -> None:
        self.index = index
        self.problem = problem
        self.tally = Tally(n_samples, max_weight=max_weight)
        self.requests: dict[int, Request] = {}  # sample index -> live request
        self.issued = 0
        self.ended = 0  # samples that came back from the engine, cancelled ones included
        self.early_stopped = False
        self.cut = False  # out of time
        self.start = start
        self.deadline: float | None = None
        self.budget: float | None = None
        self.votes: list[Vote] = []  # one per finished sample that votes: at most n_samples
        self.threshold: float | None = None  # --stop-below's group-confidence threshold, once set
        self.warm: list[float] = []  # lowest group confidences of the samples that set it
        self.unanswered = 0
        self.low_confidence = 0
        self.tokens = 0
        self.sample_correct = 0
        self.answers_final = 0
        self.answers_fallback = 0

    @property
    def stopped(self) -> bool:
        """No more samples will be issued."""
        return self.early_stopped or self.cut

    def cancel(self) -> None:
        for request in self.requests.values():
            request.cancelled = True


class Solver:
    """Solves problems on an engine under one RunConfig; ``solve`` yields results as they are decided.

    ``deadline`` (a value of ``clock``) bounds a ``solve`` call: each problem,
    when it starts, gets a share of the time left (so time a problem does not
    use goes to the ones after it); when its share runs out its unfinished
    samples are cut and it is voted on the samples that finished. At the
    deadline everything running is cut and no problem starts any more:
    problems never started get no result (the caller writes their fallback).

    With ``config.tir`` each sample runs its code blocks in its own sandbox
    worker (``aimo_gguf.sandbox``), counted in ``tool_stats``.
    """

    def __init__(
        self,
        engine: BatchEngine,
        config: RunConfig,
        *,
        traces: TraceSink | None = None,
        on_step: Callable[[], None] | None = None,
        deadline: float | None = None,
        tool_stats: ToolStats | None = None,
        clock: Clock = time.monotonic,
        parallel: int | None = None,
        waiting_elsewhere: int = 0,
        style: PromptStyle | None = None,
    ) -> None:
        # ``parallel`` and ``waiting_elsewhere``: on one replica of several (aimo_gguf.replicas), the problems
        # running side by side on all of them and those waiting for another, so a time share is the run's.
        # ``style``: the run's prompt family, worked out once (aimo_gguf.styles.style_for) when it is given.
        self.engine = engine
        self.config = config
        self.traces = traces
        self.on_step = on_step
        self.deadline = deadline
        self.clock = clock
        self.tool_stats = tool_stats if tool_stats is not None else ToolStats()
        self.sampling = SamplingParams(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                                       min_p=config.min_p)
        self.bonus = config.tir_weight if config.tir else 1.0  # a code-backed sample's extra weight
        # The largest weight a vote can carry: with --keep-top which votes count is known only at the end.
        self.weight = math.inf if config.keep_top < 100 else max_vote_weight(config.vote, config.vote_floor,
                                                                              self.bonus)
        self.timed = deadline is not None or config.problem_time_cap is not None
        self.parallel = parallel or max(1, engine.batch_size // config.samples)  # problems that run side by side
        self.waiting_elsewhere = waiting_elsewhere
        self.style = style if style is not None else style_for(engine, config)
        self._flights: dict[int, _InFlight] = {}
        self._done: list[ProblemResult] = []
        self._problems: Sequence[Problem] = ()
        self._finished = 0
        self._out_of_time = False
        self._pool = None

    # --- the loop ---------------------------------------------------------------------------------------

    def solve(self, problems: Sequence[Problem]) -> Iterator[ProblemResult]:
        """Solve ``problems``; yield each ProblemResult (``index`` = position in ``problems``) as it
        is decided, in finishing order. Stopping the iteration (or an exception, Ctrl-C included)
        frees the engine's sequences and the sandbox workers."""
        self._problems = problems
        self._flights.clear()
        self._finished = 0
        self._out_of_time = False
        if self.config.tir:
            from ..sandbox import SandboxLimits, SandboxPool

            self._pool = SandboxPool(SandboxLimits(timeout=self.config.tool_timeout,
                                                   max_output=self.config.tool_output_chars))
        step = self._check_time if self.timed else self.on_step
        try:
            for completion in self.engine.generate(self._requests(), on_step=step):
                self._on_completion(completion)
                if self._done:
                    yield from self._drain()
            yield from self._drain()
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _requests(self) -> Iterator[Request]:
        """The samples of one problem after another, made only when the engine has a slot for them."""
        config = self.config
        for index, problem in enumerate(self._problems):
            if self.deadline is not None and self.clock() >= self.deadline:
                self._out_of_time = True
            if self._out_of_time:
                return
            flight = self._open(index, problem)
            try:
                text = self.style.prompt(problem.problem)
            except InputError as e:  # the template fails on this problem alone: its fallback, the others go on
                print(f"aimo-gguf: warning: problem {problem.id!r}: {e}: it gets the fallback answer",
                      file=sys.stderr, flush=True)
                self._finish(flight)
                continue
            tokens = self.engine.tokenize(text)
            if len(tokens) >= self.engine.n_ctx_seq:
                self._finish(flight, too_long=True)
                continue
            for j in range(config.samples):
                if flight.stopped:
                    break
                request = Request(key=(index, j), prompt=tokens, max_tokens=config.max_tokens,
                                  seed=sample_seed(config.seed, problem.id, j), sampling=self.sampling,
                                  prefix_key=index, tool=self._tool((index, j), text, len(tokens)),
                                  stop_below=flight.threshold if j >= config.stop_warmup else None,
                                  render_special=self.style.special_tokens)
                flight.requests[j] = request
                flight.issued += 1
                yield request
            if flight.ended == flight.issued and flight.index in self._flights:
                self._finish(flight)  # every issued sample already came back

    def _tool(self, key: tuple[int, int], prompt: str, n_prompt: int) -> SampleTool | None:
        """The sample's tool hook: its Python tool with --tir, inside its family's budget hook; None when it
        needs none."""
        python = None
        if self._pool is not None:
            python = self.style.python_tool(self._pool, key, prompt=prompt, stats=self.tool_stats)
        room = min(self.config.max_tokens, self.engine.n_ctx_seq - n_prompt)
        return self.style.budget(python, prompt=prompt, room=room)

    def _open(self, index: int, problem: Problem) -> _InFlight:
        flight = _InFlight(index, problem, self.config.samples, self.weight, self.clock())
        self._flights[index] = flight
        if self.timed:
            self._give_budget(flight)
        return flight

    def _on_completion(self, completion: Completion) -> None:
        index, j = completion.request.key
        flight = self._flights.get(index)
        if flight is None:
            return  # its problem already finished (too long): a straggler
        if completion.finish_reason == FINISH_TOO_LONG:
            # The engine's own guard; the solver normally catches long prompts first.
            flight.cancel()
            flight.requests.clear()
            self._finish(flight, too_long=True)
            return
        self._record(flight, j, completion)

    def _record(self, flight: _InFlight, j: int, completion: Completion) -> None:
        """A sample came back: vote, trace, maybe stop the problem early, maybe finish it."""
        flight.requests.pop(j, None)
        flight.ended += 1
        reason = completion.finish_reason
        tool: SampleTool | None = completion.request.tool  # what _tool gave the request
        python = tool.python if tool is not None else None
        if python is not None:
            self._pool.release(python.key)  # the sample is over: its worker goes (on the pool's threads)
        flight.tokens += len(completion.tokens)
        confidence = completion.confidence
        if reason == FINISH_LOW_CONFIDENCE:
            flight.low_confidence += 1
            flight.tally.add(j, None)  # it ended, and does not vote
            self._trace(flight, j, completion, None)
        elif reason != FINISH_CANCELLED:
            config = self.config
            capped = reason in (FINISH_LENGTH, FINISH_KV_FULL)
            answer, source = self.style.answer(completion.text, python, truncated=capped)
            flight.answers_final += source == "final"
            flight.answers_fallback += source == "fallback"
            bonus = self.bonus if python is not None and python.all_ok else 1.0
            flight.tally.add(j, answer, bonus * vote_weight(config.vote, confidence, config.vote_floor))
            flight.votes.append(Vote(j, answer, confidence, bonus, capped))
            flight.unanswered += answer is None
            flight.sample_correct += answer is not None and answer == flight.problem.answer
            if config.stop_below is not None and j < config.stop_warmup and confidence is not None:
                self._warm_up(flight, confidence.lowest_group_confidence)
            self._trace(flight, j, completion, answer)
        if reason != FINISH_CANCELLED and not flight.stopped and flight.tally.remaining \
                and decided(flight.tally, self.config, unanswered=flight.unanswered):
            flight.early_stopped = True  # a cut sample leaves fewer to come: that can decide it too
            flight.cancel()
        # Done once every sample that will ever be issued has come back; no need
        # to wait for the engine to pull the next request.
        if flight.ended == flight.issued and (flight.issued == self.config.samples or flight.stopped):
            self._finish(flight)

    def _warm_up(self, flight: _InFlight, lowest_group: float) -> None:
        """A warm-up sample (number below --stop-warmup, whatever the order they finish in) finished: once
        all have, the threshold is set for the later samples running and to come."""
        flight.warm.append(lowest_group)
        if len(flight.warm) < self.config.stop_warmup:
            return
        flight.threshold = float(np.percentile(flight.warm, self.config.stop_below))
        for j, request in flight.requests.items():
            if j >= self.config.stop_warmup:
                request.stop_below = flight.threshold

    def _trace(self, flight: _InFlight, j: int, completion: Completion, answer: int | None) -> None:
        if self.traces is None:
            return
        confidence = completion.confidence
        self.traces.write({"id": flight.problem.id, "sample": j, "answer": answer,
                           "finish_reason": completion.finish_reason, "tokens": len(completion.tokens),
                           "confidence": None if confidence is None else confidence.as_dict(),
                           "text": completion.text})

    def _finish(self, flight: _InFlight, *, too_long: bool = False) -> None:
        self._flights.pop(flight.index, None)
        self._finished += 1
        tally, config = flight.tally, self.config
        winner = pick(flight.votes, config.vote, floor=config.vote_floor, keep_top=config.keep_top)
        fallback = winner is None
        answer = config.fallback_answer if fallback else winner
        expected = flight.problem.answer
        votes = 0 if fallback else tally.counts[winner]
        self._done.append(ProblemResult(
            index=flight.index, id=flight.problem.id, answer=answer, votes=votes,
            valid=tally.valid, samples=tally.finished, fallback=fallback, too_long=too_long,
            early_stopped=flight.early_stopped, majority=not fallback and tally.has_majority(winner),
            correct=None if expected is None else answer == expected, cut=flight.cut,
            seconds=self.clock() - flight.start, budget=flight.budget, tokens=flight.tokens,
            sample_correct=flight.sample_correct, low_confidence=flight.low_confidence,
            answers_final=flight.answers_final, answers_fallback=flight.answers_fallback,
            mode_answers=every_mode(flight.votes, floor=config.vote_floor, keep_top=config.keep_top)
            if flight.votes else None,
            **problem_metrics(flight.votes, expected=expected, samples=config.samples, vote=config.vote,
                              floor=config.vote_floor, keep_top=config.keep_top, fallback=config.fallback_answer,
                              seed=sample_seed(config.seed, flight.problem.id, -1)),
        ))

    def _drain(self) -> Iterator[ProblemResult]:
        done, self._done = self._done, []
        yield from done

    # --- time ---------------------------------------------------------------------------------------------

    def _give_budget(self, flight: _InFlight) -> None:
        """This problem's share of the time left: this one and every problem without an answer yet
        share it, ``parallel`` of them at a time; at most --problem-time-cap. What it does not use is
        still in the time left when the next problem starts."""
        budget = math.inf
        if self.deadline is not None:
            left = self.deadline - flight.start
            waiting = len(self._problems) - self._finished + self.waiting_elsewhere
            budget = max(0.0, left * min(self.parallel, waiting) / waiting)
        if self.config.problem_time_cap is not None:
            budget = min(budget, self.config.problem_time_cap)
        flight.budget = budget
        flight.deadline = flight.start + budget

    def _check_time(self) -> None:
        """After every engine step: cut the problems whose share ran out, or everything at the deadline."""
        if self.on_step is not None:
            self.on_step()
        now = self.clock()
        if self.deadline is not None and now >= self.deadline:
            self._out_of_time = True
        for flight in list(self._flights.values()):
            if not flight.cut and (self._out_of_time or now >= flight.deadline):
                flight.cut = True
                flight.cancel()


def solve(problems: Sequence[Problem], engine: BatchEngine, config: RunConfig, **options) -> Iterator[ProblemResult]:
    """``Solver(engine, config, **options).solve(problems)``."""
    return Solver(engine, config, **options).solve(problems)
