"""Summary-only verification: the counters of a run, never its logs.

A ``RunSummary`` has a fixed size whatever the number of problems; the
per-sample texts exist only while a sample is in flight, or in the ``--traces``
file when one is asked for.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field

import psutil


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class RunSummary:
    """What a run did, in counters. ``to_dict`` is what ``--summary`` writes."""

    model: str = ""  # the GGUF file
    model_description: str = ""  # llama.cpp's description: architecture, size, quantization
    n_gpu_layers_requested: int = 0
    n_gpu_layers: int = 0  # layers actually offloaded; 0 = CPU only
    gpu_offload_supported: bool = False  # False on a CPU build of llama-cpp-python
    notes: list[str] = field(default_factory=list)  # fallbacks the loader made
    batch_size: int = 0
    samples_per_problem: int = 0
    max_tokens: int = 0
    ctx: int = 0  # context of one sequence
    threads: int = 0

    problems: int = 0  # problems in the input
    problems_done: int = 0  # problems with an answer from the model or a fallback
    samples: int = 0  # samples that ran to an end (EOS, stop string or token budget)
    samples_skipped: int = 0  # samples never run or cut because the vote was decided
    valid_answers: int = 0  # samples whose text gave a valid integer answer
    majority: int = 0  # problems whose winner has a strict majority of their finished samples
    early_stopped: int = 0  # problems whose sampling stopped once the vote was decided
    fallbacks: int = 0  # problems with no valid answer: the fallback answer was written
    too_long: int = 0  # problems whose prompt does not fit the context (fallback written)
    interrupted: bool = False  # the run was stopped (Ctrl-C, SIGTERM) before every problem finished
    stopped_by: str | None = None  # the signal that stopped it: "SIGINT" or "SIGTERM"
    resumed: int = 0  # problems taken from the journal of an earlier run (--resume)
    time_limit: float | None = None  # --time-limit, seconds
    cut: int = 0  # problems whose time budget ran out: unfinished samples cut, voted on the rest
    not_started: int = 0  # problems the time limit left no time to start (fallback written)
    problem_seconds: dict | None = None  # seconds per problem solved in this run: min, median, max
    tools: dict | None = None  # with --tir: tool calls, ok / errors / timeouts, sandbox seconds, samples with tools
    budget_seconds: dict | None = None  # seconds each problem was given under --time-limit: min, median, max
    graded: int = 0  # problems with a known answer
    correct: int = 0  # graded problems answered correctly
    finish_reasons: dict[str, int] = field(default_factory=dict)  # samples by how they ended

    prompt_tokens: int = 0  # prompt tokens decoded (a prompt shared by samples counts once)
    shared_prompt_tokens: int = 0  # prompt tokens not decoded: copied from a sibling's KV or kept in the slot
    generated_tokens: int = 0
    load_seconds: float = 0.0
    run_seconds: float = 0.0  # from the first decode to the last answer
    decode_seconds: float = 0.0  # inside llama_decode
    sample_seconds: float = 0.0  # sampling and per-token bookkeeping
    kv_preemptions: int = 0
    peak_rss_mb: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.run_seconds if self.run_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["accuracy"] = self.accuracy
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        for key in ("load_seconds", "run_seconds", "decode_seconds", "sample_seconds", "peak_rss_mb"):
            data[key] = round(data[key], 3)
        return data

    def table(self) -> str:
        """The short table printed at the end of a run."""
        gpu = f"{self.n_gpu_layers}" if self.n_gpu_layers else "0 (CPU only)"
        accuracy = (
            f"{self.correct}/{self.graded} = {self.accuracy:.1%}" if self.graded else "no answer column"
        )
        rows = [
            ("problems", f"{self.problems_done}/{self.problems}"
             + (f" (stopped by {self.stopped_by or 'an interrupt'})" if self.interrupted else "")),
            ("samples", f"{self.samples} run, {self.samples_skipped} skipped by early stop"),
            ("valid answers", f"{self.valid_answers}/{self.samples}"),
            ("majority winners", f"{self.majority}"),
            ("fallbacks", f"{self.fallbacks}" + (f" ({self.too_long} too long)" if self.too_long else "")),
            ("correct", accuracy),
            ("tokens", f"{self.prompt_tokens} prompt + {self.generated_tokens} generated"),
            ("throughput", f"{self.tokens_per_second:.1f} generated tokens/s"),
            ("time", f"load {self.load_seconds:.1f} s, run {self.run_seconds:.1f} s"),
            *self._time_rows(),
            *self._tool_rows(),
            ("peak RSS", f"{self.peak_rss_mb:.0f} MiB"),
            ("GPU layers", gpu),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def _tool_rows(self) -> list[tuple[str, str]]:
        t = self.tools
        if not t:
            return []
        return [("tool calls", f"{t['tool_calls']} ({t['tool_ok']} ok, {t['tool_errors']} errors, "
                               f"{t['tool_timeouts']} timed out) in {t['samples_with_tools']} samples, "
                               f"{t['tool_seconds']:.1f} s in the sandbox")]

    def _time_rows(self) -> list[tuple[str, str]]:
        rows = []
        if self.resumed:
            rows.append(("resumed", f"{self.resumed} problems from the journal"))
        if self.time_limit is not None:
            rows.append(("time limit", f"{self.time_limit:g} s: {self.cut} problems cut, {self.not_started} not started"))
            if self.problem_seconds and self.budget_seconds:
                used, given = self.problem_seconds, self.budget_seconds
                rows.append(("per problem", f"used {used['min']:.1f} / {used['median']:.1f} / {used['max']:.1f} s, "
                                            f"given {given['min']:.1f} / {given['median']:.1f} / {given['max']:.1f} s "
                                            f"(min / median / max)"))
        return rows
