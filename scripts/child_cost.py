"""What the engine process costs: ``aimo-gguf run`` with the engine in its supervised child and with
``--in-process``, alternating, on the same problems and settings; wall time and generated tokens/s each.

    python scripts/child_cost.py [--rounds 2] [--set sample|graded] [--limit N] [-- RUN OPTIONS...]

Greedy by default, so both ways generate the same tokens. Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", default="sample", help="sample (the bundled set) or graded")
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems of the set")
    parser.add_argument("options", nargs="*", default=["-n", "2", "-b", "8", "-t", "2", "--max-tokens", "64",
                                                        "--temperature", "0"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        problems = _problems(Path(work), args.set, args.limit)
        rows = {"child": [], "in-process": []}
        for i in range(args.rounds):
            for way in ("child", "in-process"):
                out = Path(work) / f"{way}-{i}"
                extra = ["--in-process"] if way == "in-process" else []
                start = time.monotonic()
                subprocess.run([sys.executable, "-m", "aimo_gguf", "run", *problems, "-q", "-o", f"{out}.csv",
                                "--summary", f"{out}.json", "--journal", f"{out}.journal", *extra, *args.options],
                               check=True)
                wall = time.monotonic() - start
                s = json.loads(Path(f"{out}.json").read_text())
                rows[way].append((wall, s["tokens_per_second"], s["generated_tokens"]))
                print(f"{way:10} round {i}: wall {wall:6.1f} s, {s['tokens_per_second']:6.2f} generated tokens/s, "
                      f"{s['generated_tokens']} tokens, load {s['load_seconds']:.2f} s", flush=True)
        for way, values in rows.items():
            print(f"{way:10} median: wall {statistics.median(v[0] for v in values):6.1f} s, "
                  f"{statistics.median(v[1] for v in values):6.2f} tokens/s")


def _problems(work: Path, name: str, limit: int) -> list[str]:
    if name == "sample" and not limit:
        return []
    from aimo_gguf.pipeline.problems import read_problems

    problems = read_problems(None if name == "sample" else name)[: limit or None]
    path = work / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "problem": p.problem}) + "\n" for p in problems))
    return [str(path)]


if __name__ == "__main__":
    main()
