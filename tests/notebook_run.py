"""Run the shipped AIMO3 notebook's code cells in this process, as Kaggle would, for the tests.

    python tests/notebook_run.py NOTEBOOK --gateway DIR [--set NAME=LITERAL ...] [--fake-answer N]

``--gateway`` is the folder holding a ``kaggle_evaluation`` package (the stand-in in
tests/data/aimo3_gateway, or the real one). ``--set`` assigns values after the cell
tagged ``parameters``, as papermill does: the cells themselves run unchanged.
``--fake-answer`` loads the fake engine (tests/fakes.py, replying ``\\boxed{N}``)
instead of a model. The adapter's counters are printed as one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def cells(notebook: Path, assignments: list[str]) -> list[str]:
    """The notebook's code cells, with ``NAME = value`` lines injected after the parameters cell."""
    code = []
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        code.append("".join(cell["source"]))
        if "parameters" in cell["metadata"].get("tags", ()):
            code.append("\n".join(f"{name} = {value}" for name, value in map(_assignment, assignments)))
    return code


def _assignment(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name.strip(), value


def use_fake_engine(answer: int) -> None:
    """The model load, replaced by the fake engine (what the cli tier runs on)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fakes import FakeEngine, boxed

    from aimo_gguf.fit import plan as loading
    from aimo_gguf.gguf import files as models

    def load_engine(config, path, **kwargs):
        return FakeEngine(lambda prompt, sample: boxed(answer), batch_size=config.batch_size,
                          n_ctx_seq=config.sequence_ctx)

    loading.load_engine = load_engine
    models.resolve_model = lambda model: Path(model or "default.gguf")
    # The adapter's engine process loads the same fake (the loader is named for it, the path it imports from)
    tests = str(Path(__file__).resolve().parent)
    os.environ.update(AIMO_GGUF_CHILD_LOADER="fakes:load_boxed_engine", FAKE_ANSWER=str(answer),
                      PYTHONPATH=os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--gateway", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], dest="assignments")
    parser.add_argument("--fake-answer", type=int)
    args = parser.parse_args()
    sys.path.insert(0, str(args.gateway))
    if args.fake_answer is not None:
        use_fake_engine(args.fake_answer)
    namespace: dict = {"__name__": "__main__"}
    for i, source in enumerate(cells(args.notebook, args.assignments)):
        exec(compile(source, f"<cell {i}>", "exec"), namespace)
    print(json.dumps(asdict(namespace["solver"].stats)))


if __name__ == "__main__":
    main()
