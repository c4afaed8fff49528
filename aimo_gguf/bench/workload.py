"""The bench workload: which batch sizes, and the synthetic problems every row solves."""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def resolve_auto(batch_sizes: str, *, model, n_gpu_layers, max_tokens, ctx, kv_type, flash_attn, max_memory) -> str:
    """'1,4,auto' -> '1,4,N': N is what run --batch-size auto would pick for the same budget."""
    from ..fit.plan import plan_load
    from ..gguf.files import resolve_model

    config = RunConfig(model=None if model is None else str(model), n_gpu_layers=n_gpu_layers, max_tokens=max_tokens,
                       ctx=ctx, kv_type=kv_type, flash_attn=flash_attn, batch_size="auto", max_memory=max_memory)
    plan = plan_load(config, resolve_model(config.model))
    plan.say()
    auto = plan.batch_size
    return ",".join(str(auto) if part.strip() == "auto" else part for part in batch_sizes.split(","))
