"""A corpus of realistic completions with integer answers, generated from a fixed seed.

Each entry is (text, answer): reasoning full of other numbers, then one of the endings models
write (boxed, "final answer" in its common phrasings, Minerva's "Final Answer: The final answer is
$X$. I hope it is correct.", bold labels, several boxes, an intermediate box followed by the
final phrase), sometimes followed by a chat model's end token.
"""

from __future__ import annotations

import random

ENDINGS = [
    "Therefore, the answer is $\\boxed{{{a}}}$.",
    "So the final answer is \\boxed{{{a}}}.",
    "\\[\n\\boxed{{{a}}}\n\\]",
    "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "Final Answer: The final answer is {a}. I hope it is correct.",
    "**Final Answer:** {a}",
    "**Final Answer**\n\\boxed{{{a}}}",
    "The answer is {a}.",
    "Thus, the answer is ${a}$.",
    "Answer: {a}",
    "Hence the required number is $\\boxed{{{a}}}$",
    "We first guessed \\boxed{{{w}}}. Checking again gives \\boxed{{{a}}}.",
    "so the total is $x = {w} + {d} = \\boxed{{{a}}}$.",
    "Final Answer: The number of such $n$ is {a}. I hope it is correct.",
    "Putting it together, $N = \\boxed{{{a}}}$.",
    "The final answer is $\\boxed{{{a}}}$",
    "This gives \\boxed{{{a}}} as the number of ways.",
    "So we conclude that the answer is {a}",
    "Final answer: ${a}$",
    "Therefore the remainder is $\\boxed{{{a}}}$.\n\nFinal Answer: The final answer is ${a}$. I hope it is correct.",
    "The sum is $\\boxed{{{w}}}$. After adding the last term, the final answer is ${a}$.",
    "So the answer is $\\boxed{{{a}}}$. Let me double-check: ${w} + {d} = {a}$, which matches.",
    "\\boxed{{{a}}}\n\nThis is consistent with the earlier estimate of about {w}.",
    "The final answer is $\\boxed{{{a}}}$.\n\nNote: the case $k = {w}$ was already counted.",
]
TRAILERS = ["", "", "", "<|im_end|>", "</s>", "<|eot_id|>", "<end_of_turn>", "\n<|endoftext|>"]
STEPS = [
    "First, note that ${x} + {y} = {s}$.",
    "We compute $ {x} \\times {y} = {p} $.",
    "There are {x} ways to choose the first and {y} for the second.",
    "Let $n = {x}$. Then $n^2 = {q}$.",
    "Subtracting, we get ${s} - {y} = {x}$.",
    "By the formula, $\\frac{{{p}}}{{{y}}} = {x}$.",
    "Checking the case $k={y}$ gives {x} solutions.",
    "The remainder of {p} modulo {y} is {r}.",
]


def _answer(rng: random.Random, *, math: bool) -> tuple[int, str]:
    """An answer and how it is written: thousands separators now and then, LaTeX's ``{,}`` in math mode."""
    a = rng.choice([rng.randint(0, 99), rng.randint(100, 999), rng.randint(1000, 99999)])
    if a >= 1000 and rng.random() < 0.25:
        return a, rng.choice([f"{a:,}", f"{a:,}".replace(",", "{,}")]) if math else f"{a:,}"
    return a, str(a)


def corpus(n: int = 600, seed: int = 2026) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        steps = []
        for _ in range(rng.randint(1, 6)):
            x, y = rng.randint(2, 999), rng.randint(2, 99)
            steps.append(rng.choice(STEPS).format(x=x, y=y, s=x + y, p=x * y, q=x * x, r=(x * y) % y))
        template = rng.choice(ENDINGS)
        a, written = _answer(rng, math="$" in template or "boxed" in template)
        w = rng.randint(0, a)
        ending = template.format(a=written, w=w, d=a - w)
        out.append((" ".join(steps) + "\n\n" + ending + rng.choice(TRAILERS), a))
    return out
