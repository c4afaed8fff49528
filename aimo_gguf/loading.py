"""From a RunConfig to a loaded engine: the keyword arguments, ``--batch-size auto``, the load itself."""

from __future__ import annotations

import sys
from pathlib import Path

from .config import RunConfig
from .errors import InputError
from .prompts import RAW_PROMPT_STOPS


def engine_kwargs(config: RunConfig, batch_size: int, *, verbose: bool = False) -> dict:
    """The Engine keyword arguments a RunConfig stands for (model path aside)."""
    return dict(
        n_gpu_layers=config.n_gpu_layers,
        ctx=config.sequence_ctx,
        batch_size=batch_size,
        threads=config.threads,
        kv_unified=config.kv_unified,
        share_prompts=config.share_prompts,
        flash_attn=config.flash_attn,
        kv_type=config.kv_type,
        stop=config.stop + (RAW_PROMPT_STOPS if config.raw_prompt else ()),
        ignore_eos=config.ignore_eos,
        verbose=verbose,
    )


def resolve_batch_size(config: RunConfig, model_path: Path, *, quiet: bool = False) -> int:
    """``config.batch_size``, with 'auto' replaced by the largest batch the memory budget holds."""
    if config.batch_size != "auto":
        return config.batch_size
    from .memory import format_bytes, largest_batch, parse_size, read_shape

    if config.max_memory is not None:
        budget = parse_size(config.max_memory)
    elif config.n_gpu_layers == 0:
        import psutil

        budget = int(0.8 * psutil.virtual_memory().available)
    else:
        raise InputError("--batch-size auto with GPU layers needs --max-memory (the GPU memory to fill)")
    batch = largest_batch(read_shape(str(model_path)), ctx=config.sequence_ctx, max_memory=budget,
                          n_gpu_layers=config.n_gpu_layers, kv_type=config.kv_type)
    if not quiet:
        where = "GPU" if config.n_gpu_layers else "CPU"
        print(f"aimo-gguf: --batch-size auto: {batch} sequences of {config.sequence_ctx} tokens fit "
              f"{format_bytes(budget)} of {where} memory", file=sys.stderr)
    return batch


def load_engine(config: RunConfig, model_path: Path, *, verbose: bool = False):
    """The Engine ``config`` describes, on ``model_path``."""
    from .engine import Engine

    return Engine(model_path, **engine_kwargs(config, resolve_batch_size(config, model_path), verbose=verbose))
