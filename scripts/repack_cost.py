"""What --no-repack costs: prompt and generation tokens/s with the CPU backend's extra buffer types
(repacked weights, AMX where built) and without, side by side in one process.

    python scripts/repack_cost.py [MODEL.gguf ...] [--threads 2] [--rounds 3]

Without a model: the embedded SmolLM2. Each round loads the model both ways (in turn, so a shared or
throttled CPU hits both alike), decodes one 512-token prompt alone (prompt tokens/s) and generates
128 tokens for one sequence (generation tokens/s); the medians are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.gguf.files import default_model_path

PROMPT_TOKENS = 512
GENERATED_TOKENS = 128
GREEDY = SamplingParams(temperature=0.0)


def rates(model: Path, *, repack: bool, threads: int) -> tuple[float, float]:
    """(prompt tokens/s, generation tokens/s) for one load."""
    with Engine(model, ctx=1024, batch_size=1, threads=threads, ignore_eos=True, repack=repack) as engine:
        assert engine.info.repack is repack
        filler = engine.tokenize(" one two three four five six seven eight", add_special=False)
        prompt = (filler * (PROMPT_TOKENS // len(filler) + 1))[:PROMPT_TOKENS]
        list(engine.generate([Request(key=0, prompt=prompt, max_tokens=1, seed=0, sampling=GREEDY)]))
        prompt_rate = PROMPT_TOKENS / engine.stats.decode_seconds
        before = engine.stats.decode_seconds
        list(engine.generate([Request(key=1, prompt=prompt[:8], max_tokens=GENERATED_TOKENS, seed=0,
                                      sampling=GREEDY)]))
        generation_rate = GENERATED_TOKENS / (engine.stats.decode_seconds - before)
    return prompt_rate, generation_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| model | prompt tok/s, repack | --no-repack | generation tok/s, repack | --no-repack |")
    print("|---|---|---|---|---|")
    for model in args.models or [default_model_path()]:
        runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(args.rounds):
            for repack in (True, False):
                runs[repack].append(rates(model, repack=repack, threads=args.threads))
                print(f"{model.name} repack={repack}: {runs[repack][-1][0]:.0f} prompt, "
                      f"{runs[repack][-1][1]:.1f} generation tok/s", file=sys.stderr, flush=True)
        (p_on, g_on), (p_off, g_off) = [(statistics.median(r[0] for r in runs[k]),
                                         statistics.median(r[1] for r in runs[k])) for k in (True, False)]
        print(f"| {model.name} | {p_on:.0f} | {p_off:.0f} ({p_off / p_on:.0%}) | {g_on:.1f} | "
              f"{g_off:.1f} ({g_off / g_on:.0%}) |", flush=True)


if __name__ == "__main__":
    main()
