#!/usr/bin/env python
"""Speed of aimo-gguf, measured side by side in one run (figures for the README).

1. Engine generation throughput at several batch sizes, measured the way
   llama.cpp's ``llama-batched-bench`` measures it (PP prompt tokens and TG
   generated tokens per sequence, S_TG = B*TG / (T_total - T_prompt)), next to
   ``llama-batched-bench`` itself when ``--batched-bench`` names its binary
   (build it with scripts/build_llama_tools.sh), and the host work per
   sequence-step two ways: the engine's counters (a step less its
   ``llama_decode``; split into drawing tokens and confidence), and the
   engine's step time less llama-batched-bench's (which decodes and samples
   nothing), which also counts sampling moved into the decode (``--sampler
   backend``). ``--temperature``, ``--top-k``, ``--top-p``, ``--min-p`` and
   ``--confidence`` set the engine's sampling (default greedy, no confidence).
2. ``aimo-gguf run`` (the whole pipeline: prompts, batched engine, voting)
   against a loop of ``llama_cpp.Llama.create_completion`` calls doing the same
   work: same prompts, samples, seeds and token counts, EOS suppressed in both.

    python scripts/benchmark.py --threads 2 --batched-bench .bench/bin/llama-batched-bench
    python scripts/benchmark.py --model host201k.gguf --batches 1,8,32 --skip-pipeline \
        --batched-bench .bench/bin/llama-batched-bench --temperature 1 --min-p 0.02 --confidence --sampler batched
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp

from aimo_gguf.config import RunConfig
from aimo_gguf.engine import SAMPLER_PATHS, Engine, Request, SamplingParams
from aimo_gguf.engine.confidence import ConfidenceSettings
from aimo_gguf.engine.llama import eog_tokens_of
from aimo_gguf.engine.probe import open_llama
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.pipeline.problems import Problem
from aimo_gguf.pipeline.runner import run
from aimo_gguf.solving.solver import build_prompts, sample_seed

COUNTERS = ("decode_seconds", "step_seconds", "draw_seconds", "confidence_seconds", "host_cpu_seconds",
            "sequence_steps")


def engine_tg(model: Path, batch: int, pp: int, tg: int, threads: int, *, sampling: SamplingParams,
              sampler: str = "auto", confidence: bool = False) -> dict:
    """Prompt and generation speed of the engine for ``batch`` sequences, and its host work."""
    # No prompt reuse: llama-batched-bench clears the KV cache before each run, so does this.
    with Engine(model, ctx=pp + tg + 16, batch_size=batch, threads=threads, ignore_eos=True,
                cache_prompts=False, sampler=sampler, cpu_clock=True,
                confidence=ConfidenceSettings() if confidence else None) as eng:
        def requests(max_tokens):
            # Distinct prompts (no sharing), like llama-batched-bench without -pps.
            return [
                Request(key=i, prompt=[1] + [1000 + i] * (pp - 1), max_tokens=max_tokens, seed=i, sampling=sampling)
                for i in range(batch)
            ]

        list(eng.generate(requests(1)))  # warm-up, as llama-batched-bench does
        t0 = time.perf_counter()
        list(eng.generate(requests(1)))
        t_pp = time.perf_counter() - t0
        before = {name: getattr(eng.stats, name) for name in COUNTERS}
        t0 = time.perf_counter()
        list(eng.generate(requests(tg)))
        t_all = time.perf_counter() - t0
        grew = {name: getattr(eng.stats, name) - before[name] for name in COUNTERS}
        path = eng.info.sampler
    n = grew["sequence_steps"]  # the run's first step decodes the prompts too: a step among tg
    return {
        "batch": batch,
        "sampler": path,
        "s_pp": batch * pp / t_pp,
        "s_tg": batch * (tg - 1) / (t_all - t_pp),
        "python_share": (grew["step_seconds"] - grew["decode_seconds"]) / t_all,
        "host_ms": 1000 * (grew["step_seconds"] - grew["decode_seconds"]) / n,
        "draw_ms": 1000 * grew["draw_seconds"] / n,
        "confidence_ms": 1000 * grew["confidence_seconds"] / n,
        "host_cpu_ms": 1000 * grew["host_cpu_seconds"] / n,
    }


def batched_bench(binary: str, model: Path, batches: list[int], pp: int, tg: int, threads: int) -> dict[int, float]:
    """S_TG of llama-batched-bench for each batch size."""
    cmd = [binary, "-m", str(model), "-t", str(threads), "-c", str(max(batches) * (pp + tg + 16)),
           "-b", "2048", "-ub", "512", "-npp", str(pp), "-ntg", str(tg), "-npl", ",".join(map(str, batches))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            result[int(cells[2])] = float(cells[7])  # B, S_TG t/s
    return result


def pipeline_vs_loop(model: Path, n_problems: int, samples: int, tokens: int, threads: int, batches: list[int]) -> dict:
    """aimo-gguf run (at each batch size) against a create_completion loop on the same work."""
    problems = [Problem(id=f"p{i}", problem=f"What is {i + 3} times {i + 7}? Show your work.") for i in range(n_problems)]
    runs = {}
    for batch in batches:
        config = RunConfig(model=str(model), samples=samples, max_tokens=tokens, ignore_eos=True, early_stop=False,
                           threads=threads, batch_size=batch, ctx=512)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = run(problems, config=config, output=Path(tmp) / "sub.csv", progress=False)
            runs[batch] = (time.perf_counter() - t0, result.summary.generated_tokens)

    with Engine(model, ctx=512, batch_size=1, threads=threads) as eng:
        prompts = build_prompts(eng, problems, config)
    t0 = time.perf_counter()  # both sides include their model load
    llm = open_llama(model, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    eog = eog_tokens_of(llm.model)
    bias = {t: float("-inf") for t in eog}
    loop_tokens = 0
    for problem, prompt in zip(problems, prompts):
        for j in range(samples):
            out = llm.create_completion(
                prompt, max_tokens=tokens, temperature=config.temperature, top_k=config.top_k,
                top_p=config.top_p, min_p=config.min_p, seed=sample_seed(config.seed, problem.id, j),
                logit_bias=bias,
            )
            loop_tokens += out["usage"]["completion_tokens"]
    t_loop = time.perf_counter() - t0
    llm.close()
    return {"runs": runs, "loop_s": t_loop, "loop_tokens": loop_tokens}


def sharing_row(model: Path, kv_unified: bool, share: bool, n_problems: int, samples: int, tokens: int,
                threads: int, batch: int) -> dict:
    """Engine alone: a problem's samples with and without prompt sharing, per KV layout."""
    times: list[float] = []
    real_decode = llama_cpp.llama_decode

    def timed_decode(ctx, batch_):
        t0 = time.perf_counter()
        rc = real_decode(ctx, batch_)
        if batch_.n_tokens <= batch:  # generation steps: at most one token per sequence
            times.append(time.perf_counter() - t0)
        return rc

    llama_cpp.llama_decode = timed_decode
    try:
        # No prompt reuse: what a sibling's copy saves, nothing else.
        with Engine(model, ctx=256, batch_size=batch, threads=threads, ignore_eos=True, kv_unified=kv_unified,
                    share_prompts=share, cache_prompts=False) as eng:
            requests = [
                Request(key=(p, j), prompt=[1] + [1000 + p] * 57, max_tokens=tokens, seed=j, prefix_key=p)
                for p in range(n_problems) for j in range(samples)
            ]
            t0 = time.perf_counter()
            list(eng.generate(requests))
            seconds = time.perf_counter() - t0
    finally:
        llama_cpp.llama_decode = real_decode
    tail = sorted(times[-tokens:])
    return {"seconds": seconds, "median_ms": 1000 * sorted(times)[len(times) // 2],
            "last_wave_ms": 1000 * tail[len(tail) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF file [default: embedded SmolLM2]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--pp", type=int, default=64)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--batched-bench", help="path of llama-batched-bench, for the side-by-side ratio")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--run-batches", default="16,64", help="batch sizes of the aimo-gguf run rows")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each engine row (the best counts)")
    ap.add_argument("--sharing", action="store_true", help="also measure prompt sharing per KV layout")
    ap.add_argument("--sampler", default="auto", choices=SAMPLER_PATHS, help="the engine's sampling path")
    ap.add_argument("--temperature", type=float, default=0.0, help="engine rows' sampler [default: greedy]")
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--min-p", type=float, default=0.0)
    ap.add_argument("--confidence", action="store_true", help="engine rows compute per-token confidence")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    model = args.model or default_model_path()
    batches = [int(b) for b in args.batches.split(",")]
    print(f"model {model.name}, {args.threads} threads, llama-cpp-python {llama_cpp.__version__}")

    if not args.skip_engine:
        sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  min_p=args.min_p)
        print(f"\n## Engine generation throughput (PP {args.pp}, TG {args.tg}; best of {args.repeat}, "
              f"engine and llama-batched-bench alternating; sampler {args.sampler}, T {args.temperature:g}, "
              f"top-k {args.top_k}, top-p {args.top_p:g}, min-p {args.min_p:g}, "
              f"confidence {'on' if args.confidence else 'off'})")
        print("| B | engine S_PP t/s | engine S_TG t/s | llama-batched-bench S_TG t/s | ratio | Python share of time "
              "| host ms/seq-step (counters: draw, confidence) | host CPU ms/seq-step | engine - llama-batched-bench ms/seq-step |")
        print("|---|---|---|---|---|---|---|---|---|")
        for b in batches:
            rows, refs = [], []
            for _ in range(args.repeat):
                # Alternate the two so that a noisy minute on a shared machine hits both.
                if args.batched_bench:
                    refs.append(batched_bench(args.batched_bench, model, [b], args.pp, args.tg, args.threads)[b])
                rows.append(engine_tg(model, b, args.pp, args.tg, args.threads, sampling=sampling,
                                      sampler=args.sampler, confidence=args.confidence))
            row = max(rows, key=lambda r: r["s_tg"])
            ref = max(refs, default=None)
            ratio = f"{row['s_tg'] / ref:.0%}" if ref else "-"
            # Per sequence-step: B sequences per step, a step lasting B / S_TG seconds.
            gap = f"{1000 * (1 / row['s_tg'] - 1 / ref):.3f}" if ref else "-"
            host = min(rows, key=lambda r: r["host_ms"])
            print(f"| {b} | {row['s_pp']:.1f} | {row['s_tg']:.1f} | {ref or '-'} | {ratio} | {row['python_share']:.1%} "
                  f"| {host['host_ms']:.3f} ({host['draw_ms']:.3f}, {host['confidence_ms']:.3f}) "
                  f"| {min(r['host_cpu_ms'] for r in rows):.3f} | {gap} |",
                  flush=True)

    if args.sharing:
        print(f"\n## Prompt sharing and KV layout, engine alone ({args.problems} problems x {args.samples} samples x "
              f"{args.tokens} tokens, batch 16)")
        print("| KV | prompts | seconds | median step ms | median step of the last wave ms |")
        print("|---|---|---|---|---|")
        for unified, share in [(False, False), (False, True), (True, True), (True, False)]:
            r = sharing_row(model, unified, share, args.problems, args.samples, args.tokens, args.threads, 16)
            print(f"| {'unified' if unified else 'per sequence'} | {'shared by KV copy' if share else 'decoded by every sample'} "
                  f"| {r['seconds']:.1f} | {r['median_ms']:.0f} | {r['last_wave_ms']:.0f} |", flush=True)

    if not args.skip_pipeline:
        run_batches = [int(b) for b in args.run_batches.split(",")]
        r = pipeline_vs_loop(model, args.problems, args.samples, args.tokens, args.threads, run_batches)
        print(f"\n## aimo-gguf run vs a create_completion loop ({args.problems} problems x {args.samples} samples x "
              f"{args.tokens} tokens, EOS suppressed)")
        print("| pipeline | generated tokens | seconds | tokens/s | speed-up |")
        print("|---|---|---|---|---|")
        loop_s = r["loop_s"]
        print(f"| create_completion loop | {r['loop_tokens']} | {loop_s:.1f} | {r['loop_tokens'] / loop_s:.1f} | 1.00x |")
        for batch, (seconds, tokens) in r["runs"].items():
            print(f"| aimo-gguf run --batch-size {batch} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | "
                  f"{loop_s / seconds:.2f}x |")

if __name__ == "__main__":
    sys.exit(main())
