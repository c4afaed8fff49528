"""The extractor against what six public graders read in their own test cases and real completions
(tests/data/answers; the sources, commits and licences in its README).

Ours must read what each source reads on every case except the listed disagreements
(tests/data/answers/disagreements.json, each with the reason ours is right), and on integer-answer
cases from real completions agree at least 97% of the time.
"""

from __future__ import annotations

import pytest
from answer_sources import DATA, DISAGREEMENTS, SOURCES, cases

pytestmark = pytest.mark.logic

REAL_COMPLETIONS_TARGET = 0.97


@pytest.mark.parametrize("source", SOURCES)
def test_ours_reads_what_the_source_reads_except_the_listed_cases(source):
    differ = {c.id: c.ours() for c in cases(source) if c.ours() != c.answer}
    listed = {case_id: entry["ours"] for case_id, entry in DISAGREEMENTS.get(source, {}).items()}
    assert differ == listed  # a new disagreement, or a listed one that no longer holds, fails


def test_every_listed_disagreement_names_a_case_and_a_reason():
    for source, entries in DISAGREEMENTS.items():
        assert source in SOURCES
        ids = {c.id for c in cases(source)}
        for case_id, entry in entries.items():
            assert case_id in ids and len(entry["why"]) > 20, (source, case_id)


def test_agreement_on_real_completions_meets_the_target():
    chosen = [c for source in SOURCES for c in cases(source) if c.kind == "completion"]
    agree = sum(c.ours() == c.answer for c in chosen)
    assert len(chosen) >= 500
    assert agree / len(chosen) >= REAL_COMPLETIONS_TARGET


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_has_its_cases_and_their_provenance(source):
    found = cases(source)
    assert found and len({c.id for c in found}) == len(found)
    assert all(c.answer is None or isinstance(c.answer, int) for c in found)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert f"`{source}.jsonl`" in readme
