#!/usr/bin/env python3
"""Measure what to do with samples that hit --max-tokens, from a graded run's --traces.

    python scripts/truncation_policies.py TRACES PROBLEMS

TRACES is the run's ``--traces`` file (every sample's text and finish reason), PROBLEMS the problem
file it solved (with answers). Each policy reads every sample again; only the samples that ended
at the token limit ("capped") are read differently:

- ``last-number``: as any other sample (the rule before issue 21): a box, a phrase, else the value
  the text ends on;
- ``stated`` (the rule now, ``extract_answer(truncated=True)``): a box or an answer phrase only;
- ``boxed``: a box only;
- ``no-vote``: a capped sample never votes.

Printed per policy (markdown): how many capped samples answer and how many of those answers are
right, pass@1 over every sample, and the majority vote's accuracy at k = 1, 2, 4, ... n
(``aimo_gguf.solving.metrics``; a vote without an answer counts wrong, not as the fallback), all over the
problems of the traces.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

from aimo_gguf.pipeline.problems import read_problems
from aimo_gguf.solving.metrics import k_values, vote_at_k
from aimo_gguf.solving.voting import Vote
from aimo_gguf.styles.answers import extract_answer

CAPPED = ("length", "kv_full")
NO_ANSWER = -1  # below every answer range: never the expected answer
_BOX = re.compile(r"\\(?:boxed|fbox)")


def read(text: str, capped: bool, policy: str) -> int | None:
    if not capped or policy == "last-number":
        return extract_answer(text)
    if policy == "stated":
        return extract_answer(text, truncated=True)
    if policy == "boxed":
        return extract_answer(text, truncated=True) if _BOX.search(text) else None
    return None  # no-vote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces")
    parser.add_argument("problems")
    args = parser.parse_args()
    expected = {p.id: p.answer for p in read_problems(args.problems)}
    samples: dict[str, list[dict]] = defaultdict(list)
    with open(args.traces, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["finish_reason"] in ("cancelled", "low_confidence"):
                continue
            samples[record["id"]].append(record)
    n = min(len(v) for v in samples.values())
    ks = k_values(n)
    capped = sum(r["finish_reason"] in CAPPED for v in samples.values() for r in v)
    total = sum(len(v) for v in samples.values())
    finished = [(read(r["text"], False, "stated"), expected[pid]) for pid, v in samples.items() for r in v
                if r["finish_reason"] not in CAPPED]
    answered = [a for a, _ in finished if a is not None]
    right = sum(a == e for a, e in finished if a is not None)
    share = right / max(1, len(answered))
    print(f"{len(samples)} problems, {total} samples, {capped} capped ({capped / total:.0%}); the samples that "
          f"finished: {len(answered)}/{len(finished)} answer, {right} of them right ({share:.0%})\n")
    print("| policy | capped samples that answer | of them right | pass@1 | "
          + " | ".join(f"maj@{k}" for k in ks) + " |")
    print("|" + "---|" * (4 + len(ks)))
    for policy in ("last-number", "stated", "boxed", "no-vote"):
        answered = right = 0
        pass1 = 0.0
        at_k = [0.0] * len(ks)
        for pid, records in samples.items():
            votes = []
            for r in sorted(records, key=lambda r: r["sample"]):
                is_capped = r["finish_reason"] in CAPPED
                answer = read(r["text"], is_capped, policy)
                answered += is_capped and answer is not None
                right += is_capped and answer is not None and answer == expected[pid]
                votes.append(Vote(r["sample"], answer))
            pass1 += sum(v.answer == expected[pid] for v in votes) / len(votes)
            for i, k in enumerate(ks):
                # A vote without an answer counts wrong here (no fallback): a problem whose answer is the
                # fallback would otherwise reward the policy that answers least.
                at_k[i] += vote_at_k(votes[:n], k, expected=expected[pid], fallback=NO_ANSWER)
        share = f"{right}/{answered} = {right / answered:.0%}" if answered else "-"
        print(f"| {policy} | {answered}/{capped} | {share} | {pass1 / len(samples):.1%} | "
              + " | ".join(f"{v / len(samples):.1%}" for v in at_k) + " |")


if __name__ == "__main__":
    main()
