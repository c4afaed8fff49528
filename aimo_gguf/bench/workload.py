"""The bench workload: which batch sizes, and the synthetic problems every row solves."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..engine.limits import check_batch_size
from ..errors import InputError
from ..pipeline.problems import Problem

PROBLEM_TEMPLATE = "What is {a} times {b}?"  # problem i asks for (i + 3) x (i + 7)


def parse_batch_sizes(value: str | int | Iterable[int]) -> tuple[int, ...]:
    """'1,2,4' (or a sequence of ints) -> (1, 2, 4): positive, deduplicated, ascending."""
    if isinstance(value, str):
        items: list = [part.strip() for part in value.split(",")]
        shown = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items, shown = [value], str(value)
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
        shown = ",".join(map(str, items))
    message = f"--batch-sizes must be positive integers separated by commas (e.g. 1,4,16), got {shown!r}"
    sizes = []
    for item in items:
        if isinstance(item, str) and re.fullmatch(r"\+?\d+", item):
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise InputError(message)
        sizes.append(item)
    if not sizes:
        raise InputError(message)
    check_batch_size(max(sizes), flag="--batch-sizes")
    return tuple(sorted(set(sizes)))


def parse_samplers(value: str | Iterable[str]) -> tuple[str, ...]:
    """'batched,chain' (or a sequence of names) -> ('batched', 'chain'): sampling paths, in order, once each."""
    from ..engine import SAMPLER_PATHS

    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    paths = tuple(dict.fromkeys(items))
    if not paths or any(p not in SAMPLER_PATHS for p in paths):
        raise InputError(f"--samplers must be sampling paths separated by commas ({', '.join(SAMPLER_PATHS)}), "
                         f"got {','.join(items)!r}")
    return paths


def synthetic_problems(n: int) -> list[Problem]:
    """``n`` problems like "What is 3 times 7?" (ids p0, p1, ...), with their answers."""
    return [
        Problem(id=f"p{i}", problem=PROBLEM_TEMPLATE.format(a=i + 3, b=i + 7), answer=(i + 3) * (i + 7))
        for i in range(n)
    ]


def resolve_auto(config: RunConfig, path: Path, batch_sizes: str | Iterable[int]) -> tuple[tuple[int, ...], RunConfig]:
    """The batch sizes and the config with 'auto' resolved (``--n-gpu-layers auto``, an 'auto' among the
    batch sizes) by one load plan of ``config`` itself, so the split, flash-attention and thread flags
    count: '1,4,auto' -> (1, 4, N), N being what run --batch-size auto picks for the same budget (and
    the 'auto' layers are planned for it); with layers 'auto' alone, they are planned for the largest size."""
    from ..fit.plan import plan_load

    auto_batch = isinstance(batch_sizes, str) and "auto" in [part.strip() for part in batch_sizes.split(",")]
    if not auto_batch:
        sizes = parse_batch_sizes(batch_sizes)
        if config.n_gpu_layers != "auto":
            return sizes, config
    plan = plan_load(replace(config, batch_size="auto" if auto_batch else max(sizes)), path)
    plan.say()
    if auto_batch:
        sizes = parse_batch_sizes(",".join(str(plan.batch_size) if part.strip() == "auto" else part
                                           for part in batch_sizes.split(",")))
    return sizes, replace(config, n_gpu_layers=plan.n_gpu_layers)
