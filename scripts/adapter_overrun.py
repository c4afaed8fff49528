"""The AIMO3 adapter's overrun of a problem's share, with the engine's default step (2048 tokens) and the
adapter's (512), side by side: SmolLM2 on this CPU, 10 problems of about 1100 prompt tokens.

    python scripts/adapter_overrun.py [TOTAL_SECONDS]   (default 8)
"""

from __future__ import annotations

import sys
import time

from aimo_gguf.kaggle import KaggleSolver

TOTAL = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
words = " ".join(f"a{i}" for i in range(300))  # about 1100 tokens with the question
for step in (2048, 512, 2048, 512):
    t0 = time.monotonic()
    s = KaggleSolver(None, total_seconds=TOTAL, safety_seconds=0.0, n_problems=10, samples=8, batch_size=8,
                     max_tokens=64, ctx=2048, step_tokens=step, temperature=0.7)
    load = time.monotonic() - t0
    over = []
    for i in range(10):
        share = max(0.0, s.seconds_left()) / max(1, s.problems_left)
        a = time.monotonic()
        s.predict(f"p{i}", f"Sum these numbers: {words}. What is {i} + 1?")
        over.append((time.monotonic() - a) - share)
    end = time.monotonic() - t0
    s.close()
    print(f"step_tokens={step}: load {load:.1f} s, worst overrun of a share {max(over):.2f} s, "
          f"ended at {end:.2f} s of {TOTAL:g} s", flush=True)
