#!/usr/bin/env python3
"""Write aimo_gguf/data/graded_problems.jsonl: 320 word problems with known integer answers, five levels.

A set a 135M-270M model can partly solve, so vote modes can be compared on a CPU
(``aimo-gguf run graded -n 8``). Level 1 is one addition or subtraction of small
numbers; 2 one multiplication or division; 3 two steps; 4 counting and
remainders; 5 several steps (series, choices, digit sums). Generated from a
fixed seed: the file is reproducible, and tests/logic/test_problems.py checks
that it equals this script's output and that every answer is right.

    python scripts/make_graded_set.py            # rewrite the file
    python scripts/make_graded_set.py --check    # exit 1 if the file differs
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

PER_LEVEL = 64
SEED = 2026
OUT = Path(__file__).resolve().parent.parent / "aimo_gguf" / "data" / "graded_problems.jsonl"
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Juno", "Kofi", "Lena"]
THINGS = ["apples", "marbles", "stamps", "books", "coins", "pencils", "shells", "cards"]


def level1(r: random.Random) -> tuple[str, int]:
    n, t = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 40), r.randint(2, 40)
    if r.random() < 0.5:
        return f"{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?", a + b
    a, b = max(a, b), min(a, b)
    return f"{n} has {a} {t} and gives away {b}. How many {t} are left?", a - b


def level2(r: random.Random) -> tuple[str, int]:
    n, t = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 12), r.randint(2, 12)
    if r.random() < 0.5:
        return f"{n} has {a} boxes with {b} {t} in each box. How many {t} are there in all?", a * b
    return f"{a * b} {t} are shared equally among {a} children. How many {t} does each child get?", b


def level3(r: random.Random) -> tuple[str, int]:
    n, t = r.choice(NAMES), r.choice(THINGS)
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(1, 30)
    if r.random() < 0.5:
        return (f"{n} buys {a} packs of {t} with {b} in each pack, then finds {c} more. "
                f"How many {t} does {n} have?"), a * b + c
    c = r.randint(1, a * b - 1)
    return (f"{n} has {a} bags of {b} {t} and loses {c} of them. How many {t} are left?"), a * b - c


def level4(r: random.Random) -> tuple[str, int]:
    kind = r.randrange(3)
    if kind == 0:
        k, n = r.randint(3, 9), r.randint(40, 200)
        return f"How many positive integers up to {n} are multiples of {k}?", n // k
    if kind == 1:
        a, m = r.randint(50, 999), r.randint(3, 13)
        return f"What is the remainder when {a} is divided by {m}?", a % m
    n = r.randint(2, 60)
    return f"How many positive divisors does {n} have?", sum(1 for d in range(1, n + 1) if n % d == 0)


def level5(r: random.Random) -> tuple[str, int]:
    kind = r.randrange(4)
    if kind == 0:
        n = r.randint(5, 60)
        return f"What is the sum of the integers from 1 to {n}?", n * (n + 1) // 2
    if kind == 1:
        n, k = r.randint(4, 10), r.randint(2, 3)
        return f"In how many ways can {k} students be chosen from a class of {n}?", math.comb(n, k)
    if kind == 2:
        n = r.randint(100, 99999)
        return f"What is the sum of the digits of {n}?", sum(map(int, str(n)))
    a, d, k = r.randint(1, 20), r.randint(2, 9), r.randint(5, 20)
    return (f"An arithmetic sequence starts {a}, {a + d}, {a + 2 * d}, ... What is its term number {k}?",
            a + (k - 1) * d)


LEVELS = [level1, level2, level3, level4, level5]


def problems() -> list[dict]:
    r = random.Random(SEED)
    out = []
    for level, make in enumerate(LEVELS, 1):
        for i in range(PER_LEVEL):
            text, answer = make(r)
            out.append({"id": f"L{level}-{i:02d}", "problem": text, "answer": answer, "level": level})
    return out


def render() -> str:
    return "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'differs: run scripts/make_graded_set.py'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} problems to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
