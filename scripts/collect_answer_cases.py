#!/usr/bin/env python3
"""Write tests/data/answers/<source>.jsonl: answer-extraction cases from six public graders' suites.

Each case is a text and the integer answer its source reads in it (``null``: no answer, or an answer
that is not one integer), with where it came from. The sources are read from git checkouts at the
commits named in ``SOURCES`` (``git show COMMIT:PATH``), so the files are reproducible:

    python scripts/collect_answer_cases.py --repos DIR    # DIR/<owner>+<name> is each repository's git dir

What each source's reading is:

- unit tests of the form (gold, prediction, verdict) (Math-Verify, lighteval, Hendrycks MATH,
  NeMo-Skills' math_equal): the cases whose gold is one integer; a "equal" verdict reads the gold,
  a "not equal" one reads no integer (``HAND_READINGS`` names the few that read another one);
- real completions with the grader's own extraction (Qwen2.5-Math's ``pred``, NeMo-Skills'
  ``predicted_answer``), for problems whose expected answer is an integer: that extraction, as an
  integer when it is one;
- MathArena's hand-made mappings (``parse_manual.py``): box contents and whole completions its
  authors mapped by hand to the right answer.

A long completion is kept from the paragraph before its last ``TAIL`` characters, its last two boxes
and its last "answer" (the licences allow copies; short cases keep the files small): every reading above comes
from there. Whether a string is one integer (a gold, an
extraction) is decided by Math-Verify's parser, the tests' own library.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "answers"
TAIL = 400  # characters kept of a long completion
COMPLETION = 200  # a text this long or longer is a completion, not a unit test's snippet

SOURCES = {
    "math_verify": ("huggingface/Math-Verify", "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a", "MIT"),
    "lighteval": ("huggingface/lighteval", "3fd15266bc8448b797e61462d293aa3fd40b3580", "MIT"),
    "qwen25_math": ("QwenLM/Qwen2.5-Math", "a45202bd16f1ec06f433442dc1152d0074773465", "MIT (evaluation/LICENSE)"),
    "nemo_skills": ("NVIDIA/NeMo-Skills", "0b012df8a09cd4730d31b16e90a0d8f13d145fb8", "Apache-2.0"),
    "matharena": ("eth-sri/matharena", "e92766038a80eee227589f5ea688004240bca8e0", "MIT"),
    "hendrycks_math": ("hendrycks/math", "985bdc1696e88e8643f081a0ff4719da39f2ae2a", "MIT"),
}
# NeMo-Skills' OpenMathInstruct sample (tool-integrated solutions) was removed at 417d4dc; read from its parent.
NEMO_OMI_COMMIT = "7781f74fc9715b33bdf22b9fbd3353baedf9f2ec"

# "Not equal" verdicts whose text does read one integer (other than the gold), by case id.
HAND_READINGS: dict[str, int] = {
    "modeling/math_equivalence_test.py::test_units2.0": 100,  # not 10 units: 100
    "modeling/math_equivalence_test.py::test_units2.1": 10,  # not 100: 10 units
    "tests/test_all.py::test_math_extraction_additional_cases[20]": 1112122,  # not 1112112_3: 1112122_3
    "tests/unit/metrics/test_extractive_match.py::test_math_extraction_additional_cases[18]": 1112122,
}
# Completions that stop mid-sentence or mid-expression (judged by hand): the generation hit its token
# limit, and is read as a truncated sample is (``extract_answer(..., truncated=True)``).
TRUNCATED = {
    *(f"tests/data/output-rs0.test:{n}" for n in (26, 29, 35, 43, 49)),
    *(f"tests/data/output-rs1.test:{n}" for n in (31, 35, 43)),
    *(f"tests/data/output-rs2.test:{n}" for n in (7, 11, 26, 35, 49)),
    "evaluation/parser.py::_test_extract_answer",
}


class Reader:
    def __init__(self, repos: Path) -> None:
        self.repos = repos

    def show(self, source: str, path: str, commit: str | None = None) -> str:
        repo, pinned, _ = SOURCES[source]
        git_dir = self.repos / repo.replace("/", "+")
        if (git_dir / "repo").is_dir():
            git_dir = git_dir / "repo"
        return subprocess.run(["git", "-C", str(git_dir), "show", f"{commit or pinned}:{path}"], check=True,
                              capture_output=True, text=True).stdout


def as_integer(text: str) -> int | None:
    """The one integer Math-Verify reads in ``text`` (wrapped in math mode when it is bare; ``25.0`` is 25),
    or None."""
    import sympy
    from math_verify import LatexExtractionConfig, parse

    if not re.search(r"\$|\\\(|\\\[|\\boxed", text):
        text = f"${text}$"
    try:
        found = parse(text, [LatexExtractionConfig(boxed_match_priority=0)])
    except Exception:  # noqa: BLE001 - a parser failure means no integer
        return None
    if not found:
        return None
    value = found[0]
    try:
        value = value.doit()  # factorial(7)/16 is 315
    except (AttributeError, TypeError, ValueError):
        pass
    try:
        if isinstance(value, sympy.Integer) or (getattr(value, "is_number", False) and value.is_integer):
            return int(value)
        if isinstance(value, sympy.Float) and float(value).is_integer():
            return int(value)
    except (TypeError, ValueError):
        pass
    return None


def plain_integer(text: str) -> bool:
    """Whether a dataset's expected answer is a plain integer (``420``, ``10,000``, ``$-3$``)."""
    return re.fullmatch(r"-?\d{1,3}(?:,\d{3})*|-?\d+", text.strip().strip("$").strip()) is not None


def tail(text: str) -> str:
    """``text`` from the paragraph start before its last ``TAIL`` characters, its last two boxes and its
    last "answer": what every source reads is in it."""
    if len(text) <= TAIL:
        return text
    boxes = [m.start() for m in re.finditer(r"boxed|fbox", text)][-2:]  # an empty last box gives way to the one before
    marks = [len(text) - TAIL, *boxes, text.lower().rfind("answer")]
    start = min(m for m in marks if m >= 0)
    cut = text.rfind("\n\n", 0, start)
    return text if cut == -1 else text[cut + 2:]


def case(source: str, case_id: str, text: str, answer: int | None, says: str, *, kind: str | None = None) -> dict:
    kind = kind or ("completion" if len(text) >= COMPLETION else "case")
    extra = {"truncated": True} if case_id in TRUNCATED else {}
    return {"id": case_id, "kind": kind, **extra, "text": text,
            "answer": answer, "source_says": says}


def parametrized(code: str) -> Iterator[tuple[str, int, dict]]:
    """(test name, index, case) for every literal case of every ``pytest.mark.parametrize`` in ``code``."""
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                continue
            try:
                names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            except (ValueError, TypeError, SyntaxError):
                continue
            if not isinstance(dec.args[1], (ast.List, ast.Tuple)):
                continue
            for i, element in enumerate(dec.args[1].elts):
                try:
                    value = ast.literal_eval(element)
                except (ValueError, TypeError, SyntaxError):
                    continue  # a case built by code (``5 / 2``, an f-string): not literal data
                yield node.name, i, {names[0]: value} if len(names) == 1 else dict(zip(names, value, strict=False))


def verdict_cases(source: str, path: str, code: str) -> Iterator[dict]:
    """(gold, pred, expected) tests whose gold is one integer."""
    for test, i, c in parametrized(code):
        if "gold" not in c or "pred" not in c:
            continue
        gold = as_integer(str(c["gold"]))
        verdict = c.get("expected", c.get("result"))
        if gold is None or verdict not in (0, 1, True, False):
            continue
        case_id = f"{path}::{test}[{i}]"
        if verdict:
            yield case(source, case_id, c["pred"], gold, f"equal to gold {c['gold']!r}")
        else:
            yield case(source, case_id, c["pred"], HAND_READINGS.get(case_id), f"not equal to gold {c['gold']!r}")


def math_verify(reader: Reader) -> Iterator[dict]:
    for name in ("test_all.py", "test_open_thoughts.py", "test_numina_cases.py", "test_boxed.py"):
        path = f"tests/{name}"
        yield from verdict_cases("math_verify", path, reader.show("math_verify", path))


def lighteval(reader: Reader) -> Iterator[dict]:
    path = "tests/unit/metrics/test_extractive_match.py"
    yield from verdict_cases("lighteval", path, reader.show("lighteval", path))


def pair_cases(source: str, path: str, pairs: list[tuple[str, str, bool, str]]) -> Iterator[dict]:
    """Equivalence tests (a, b, equal): each side with an integer value tests the other, boxed."""
    for a, b, equal, where in pairs:
        for side, (gold, other) in enumerate(((a, b), (b, a))):
            value = as_integer(str(gold))
            if value is None:
                continue
            case_id = f"{path}::{where}.{side}"
            answer = value if equal else HAND_READINGS.get(case_id)
            boxed = f"\\boxed{{{other} }}" if other.endswith("\\") else f"\\boxed{{{other}}}"  # "185\\" is no "\\}"
            yield case(source, case_id, boxed, answer, f"{'equal' if equal else 'not equal'} to {gold!r}")


def hendrycks_math(reader: Reader) -> Iterator[dict]:
    path = "modeling/math_equivalence_test.py"
    code = reader.show("hendrycks_math", path)
    pairs = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.FunctionDef):
            values = {t.id: v.value for n in node.body if isinstance(n, ast.Assign)
                      for t in n.targets if isinstance(t, ast.Name)
                      for v in [n.value] if isinstance(v, ast.Constant)}
            for n in ast.walk(node):
                if isinstance(n, ast.Call) and getattr(n.func, "attr", "") in ("assertTrue", "assertFalse"):
                    equal = n.func.attr == "assertTrue"
                    pairs.append((values.get("test_in"), values.get("test_out"), equal, node.name))
    yield from pair_cases("hendrycks_math", path, [p for p in pairs if None not in p])


def nemo_skills(reader: Reader) -> Iterator[dict]:
    path = "tests/test_math_equal.py"
    pairs = [(str(c["output_pair"][0]), str(c["output_pair"][1]), test == "test_correct_examples", f"{test}[{i}]")
             for test, i, c in parametrized(reader.show("nemo_skills", path)) if "output_pair" in c]
    yield from pair_cases("nemo_skills", path, pairs)
    files = [(f"tests/data/output-rs{i}.test", None, "generation") for i in range(3)]
    files.append(("tests/data/openmathinstruct.test", NEMO_OMI_COMMIT, "generated_solution"))
    for path, commit, field in files:
        for line, raw in enumerate(reader.show("nemo_skills", path, commit).splitlines()):
            row = json.loads(raw)
            if not plain_integer(str(row["expected_answer"])):
                continue
            pred = row.get("predicted_answer")
            answer = None if pred is None else as_integer(str(pred))
            yield case("nemo_skills", f"{path}:{line + 1}", tail(row[field]), answer, f"predicted_answer {pred!r}",
                       kind="completion")


def qwen25_math(reader: Reader) -> Iterator[dict]:
    path = "evaluation/data/eval_rm_maj_example/math_cot_100.jsonl"
    for line, raw in enumerate(reader.show("qwen25_math", path).splitlines()):
        row = json.loads(raw)
        if not plain_integer(row["gt"]):
            continue
        for j, (text, pred) in enumerate(zip(row["code"], row["pred"], strict=True)):
            yield case("qwen25_math", f"{path}:{line + 1}[{j}]", tail(text), as_integer(pred) if pred else None,
                       f"pred {pred!r}", kind="completion")
    # parser.py's own test: a completion cut off mid-expression, read with use_last_number=False.
    parser = reader.show("qwen25_math", "evaluation/parser.py")
    text = re.search(r'def _test_extract_answer\(\):\n    text = """(.*?)"""', parser, re.S).group(1)
    yield case("qwen25_math", "evaluation/parser.py::_test_extract_answer", text, None, "'' (cut off)",
               kind="completion")
    # grader.py's test notes: predictions its grader must not take for the integer gold.
    grader = reader.show("qwen25_math", "evaluation/grader.py")
    for i, (pred, gold) in enumerate(re.findall(r"# pred = '([^']*)',? ?\n?\s*# gt = '([^']*)'", grader)
                                     + re.findall(r"# pred = '([^']*)', gt = '([^']*)'", grader)):
        if as_integer(gold) is not None:
            yield case("qwen25_math", f"evaluation/grader.py::_test_math_equal[{i}]", f"\\boxed{{{pred}}}", None,
                       f"a pred its grader tests against gold {gold!r}")


def matharena(reader: Reader) -> Iterator[dict]:
    path = "src/matharena/parse_manual.py"
    tree = ast.parse(reader.show("matharena", path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            mapping = ast.literal_eval(node.value)
            for i, (found, answer) in enumerate(mapping.items()):
                # manual_mapper: the content of a completion's last box -> the answer by hand;
                # complete_mapper: a whole completion -> its answer, boxed.
                text = f"\\boxed{{{found}}}" if name == "manual_mapper" else tail(found)
                value = as_integer(answer)
                yield case("matharena", f"{path}::{name}[{i}]", text, value, f"mapped by hand to {answer!r}",
                           kind="case" if name == "manual_mapper" else "completion")


COLLECTORS = {"math_verify": math_verify, "lighteval": lighteval, "qwen25_math": qwen25_math,
              "nemo_skills": nemo_skills, "matharena": matharena, "hendrycks_math": hendrycks_math}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=Path, required=True, help="folder of <owner>+<name> git checkouts")
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    OUT.mkdir(parents=True, exist_ok=True)
    for source, collect in COLLECTORS.items():
        rows, seen = [], set()
        for row in collect(Reader(args.repos)):
            key = (row["text"], row["answer"])
            if key not in seen:  # the same case twice in one suite counts once
                seen.add(key)
                rows.append(row)
        with open(OUT / f"{source}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{source}: {len(rows)} cases ({sum(r['kind'] == 'completion' for r in rows)} completions)")


if __name__ == "__main__":
    main()
