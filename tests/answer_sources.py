"""Answer-extraction cases from six public graders' suites (tests/data/answers, made by
scripts/collect_answer_cases.py) and how often the extractor reads what each source reads.

``python tests/answer_sources.py`` prints the agreement table and the listed disagreements as
markdown (README's "Answer rules" and tests/data/answers/README.md carry them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aimo_gguf.styles.answers import extract_answer

DATA = Path(__file__).resolve().parent / "data" / "answers"
SOURCES = ("math_verify", "lighteval", "qwen25_math", "nemo_skills", "matharena", "hendrycks_math")
# Where ours differs on purpose: {source: {case id: {"ours": value, "why": reason ours is right}}}.
DISAGREEMENTS = json.loads((DATA / "disagreements.json").read_text(encoding="utf-8"))
UNBOUNDED = 10**40  # the cases are read without a range: the value the text states, whatever it is


@dataclass(frozen=True, slots=True)
class Case:
    source: str
    id: str
    kind: str  # "completion" (a model's whole output, or its end) or "case" (a unit test's snippet)
    text: str
    answer: int | None  # what the source reads: one integer, or None (nothing, or not one integer)
    truncated: bool  # the completion stops mid-sentence: read as a sample that hit the token limit

    def ours(self) -> int | None:
        return extract_answer(self.text, min_answer=-UNBOUNDED, max_answer=UNBOUNDED, truncated=self.truncated)


def cases(source: str) -> list[Case]:
    with open(DATA / f"{source}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [Case(source, r["id"], r["kind"], r["text"], r["answer"], r.get("truncated", False)) for r in rows]


def agreement_table() -> str:
    """Markdown: per source, agreement on completions and on unit-test cases."""
    lines = ["| source | real completions | unit-test cases | listed disagreements |", "|---|---|---|---|"]
    totals = {"completion": [0, 0], "case": [0, 0]}
    for source in SOURCES:
        row = [source]
        for kind in ("completion", "case"):
            chosen = [c for c in cases(source) if c.kind == kind]
            agree = sum(c.ours() == c.answer for c in chosen)
            totals[kind][0] += agree
            totals[kind][1] += len(chosen)
            row.append(f"{agree}/{len(chosen)} = {agree / len(chosen):.1%}" if chosen else "-")
        row.append(str(len(DISAGREEMENTS.get(source, {}))))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| **all** | " + " | ".join(f"{a}/{n} = {a / n:.1%}" for a, n in totals.values())
                 + f" | {sum(len(d) for d in DISAGREEMENTS.values())} |")
    return "\n".join(lines)


def disagreement_list() -> str:
    """Markdown: every listed disagreement, with what each side reads and why ours is right."""
    lines = []
    for source in SOURCES:
        by_id = {c.id: c for c in cases(source)}
        for case_id, entry in DISAGREEMENTS.get(source, {}).items():
            case = by_id[case_id]
            text = case.text if len(case.text) <= 90 else "..." + case.text[-87:]
            lines.append(f"- {source} `{case_id}`: `{text!r}`: the source {case.answer}, ours {entry['ours']}: "
                         f"{entry['why']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(agreement_table())
    print()
    print(disagreement_list())
