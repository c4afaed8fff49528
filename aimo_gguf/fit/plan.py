"""From a RunConfig to a loaded engine: the keyword arguments, ``--batch-size auto``, the load itself."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..errors import InputError
from ..styles.prompts import RAW_PROMPT_STOPS

GPU_RUNTIME_RESERVE = 512 * 2**20  # CUDA's own context and the driver: not in llama.cpp's accounting


def engine_kwargs(config: RunConfig, batch_size: int, *, verbose: bool = False, n_gpu_layers: int | None = None,
                  graded: bool = False, traces: bool = False) -> dict:
    """The Engine keyword arguments a RunConfig stands for (model path aside); ``n_gpu_layers``
    overrides the config's (its 'auto' resolved); ``graded`` (the problems have answers) and
    ``traces`` turn the automatic confidence on."""
    return dict(
        n_gpu_layers=config.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
        ctx=config.sequence_ctx,
        batch_size=batch_size,
        threads=config.threads,
        kv_unified=config.kv_unified,
        share_prompts=config.share_prompts,
        cache_prompts=config.cache_prompts,
        flash_attn=config.flash_attn,
        kv_type=config.kv_type,
        stop=config.stop + (RAW_PROMPT_STOPS if config.raw_prompt else ()),
        ignore_eos=config.ignore_eos,
        confidence=config.confidence_settings(graded=graded, traces=traces),
        split_mode=config.split_mode,
        tensor_split=config.tensor_split_values,
        main_gpu=config.main_gpu,
        repack=config.repack,
        sampler=config.sampler,
        verbose=verbose,
    )


def resolve_gpu_layers(config: RunConfig, model_path: Path, *, quiet: bool = False) -> int:
    """``config.n_gpu_layers``, with 'auto' replaced by the most layers whose memory estimate fits
    the GPU's free memory (NVML) or ``--max-memory``, for the batch and context asked for (a batch
    of 1 with ``--batch-size auto``, which then fills what is left)."""
    if config.n_gpu_layers != "auto":
        return config.n_gpu_layers
    from ..engine.llama import supports_gpu_offload
    from .memory import format_bytes, most_gpu_layers, parse_size, read_shape

    if not supports_gpu_offload():
        if not quiet:
            print("aimo-gguf: --n-gpu-layers auto: this llama-cpp-python build cannot offload: 0 layers (CPU)",
                  file=sys.stderr)
        return 0
    if config.max_memory is None and config.split_mode != "none":
        from .shares import gpu_sizes

        free = gpu_sizes(free=True)
        if len(free) > 1:
            return _split_gpu_layers(config, model_path, free, quiet=quiet)
    if config.max_memory is not None:
        budget, where = parse_size(config.max_memory), "--max-memory"
    else:
        free = one_gpu_free(config)
        if free is None:
            raise InputError("--n-gpu-layers auto needs the GPU's free memory (install nvidia-ml-py) "
                             "or --max-memory")
        gpu = config.main_gpu if config.split_mode == "none" else 0
        budget, where = max(0, free - GPU_RUNTIME_RESERVE), f"GPU {gpu}'s free memory"
    batch = 1 if config.batch_size == "auto" else config.batch_size
    shape = read_shape(str(model_path))
    layers = most_gpu_layers(shape, ctx=config.sequence_ctx, batch_size=batch, max_memory=budget,
                             kv_type=config.kv_type)
    if not quiet:
        shown = "all" if layers < 0 else str(layers)
        print(f"aimo-gguf: --n-gpu-layers auto: {shown} of {shape.n_layers + 1} layers fit "
              f"{format_bytes(budget)} ({where}) with {batch} x {config.sequence_ctx} tokens", file=sys.stderr)
    return layers


def one_gpu_free(config: RunConfig) -> int | None:
    """Free bytes of the GPU one engine uses alone (``--main-gpu`` with ``--split-mode none``, else the
    first), from NVML; None without it."""
    from .gpus import gpu_memories, gpu_memory

    index = config.main_gpu if config.split_mode == "none" else 0
    if index == 0:
        memory = gpu_memory()
        return None if memory is None else memory[2]
    memories = gpu_memories()
    if not memories:
        return None
    if index >= len(memories):
        raise InputError(f"--main-gpu {config.main_gpu}: only {len(memories)} GPU(s) are visible "
                         f"(0 to {len(memories) - 1})")
    return memories[index][2]


def check_devices(config: RunConfig) -> None:
    """--main-gpu and --tensor-split against the GPUs there are, before a load (a CPU build: nothing)."""
    from ..engine.llama import max_devices, supports_gpu_offload
    from .gpus import gpu_memories

    if not supports_gpu_offload():
        return
    shares = config.tensor_split_values
    if shares is not None and len(shares) > max_devices():
        raise InputError(f"--tensor-split has {len(shares)} shares: this llama.cpp build drives at most "
                         f"{max_devices()} devices")
    visible = len(gpu_memories())
    if not visible:
        return  # no NVML: llama.cpp says what is wrong, if anything
    if config.main_gpu >= visible:
        raise InputError(f"--main-gpu {config.main_gpu}: only {visible} GPU(s) are visible (0 to {visible - 1})")
    if shares is not None and len(shares) > visible:
        raise InputError(f"--tensor-split has {len(shares)} shares, and {visible} GPU(s) are visible")


def _split_gpu_layers(config: RunConfig, model_path: Path, free: list[int], *, quiet: bool) -> int:
    """-ngl auto over several GPUs: the most layers whose every GPU's share fits its free memory."""
    from .memory import format_bytes, read_shape
    from .shares import most_gpu_layers_split

    batch = 1 if config.batch_size == "auto" else config.batch_size
    shape = read_shape(str(model_path))
    layers, shares = most_gpu_layers_split(shape, ctx=config.sequence_ctx, batch_size=batch, sizes=free,
                                           kv_type=config.kv_type, split_mode=config.split_mode,
                                           tensor_split=config.tensor_split_values, main_gpu=config.main_gpu,
                                           reserve=GPU_RUNTIME_RESERVE)
    if not quiet:
        shown = "all" if layers < 0 else str(layers)
        each = ", ".join(f"GPU{i} {format_bytes(b)} of {format_bytes(f)} free"
                         for i, (b, f) in enumerate(zip(shares.per_device, free)))
        print(f"aimo-gguf: --n-gpu-layers auto: {shown} of {shape.n_layers + 1} layers fit {len(free)} GPUs "
              f"(--split-mode {config.split_mode}) with {batch} x {config.sequence_ctx} tokens: {each}",
              file=sys.stderr)
    return layers


def resolve_batch_size(config: RunConfig, model_path: Path, *, quiet: bool = False,
                       n_gpu_layers: int | None = None) -> int:
    """``config.batch_size``, with 'auto' replaced by the largest batch the memory budget holds."""
    if config.batch_size != "auto":
        return config.batch_size
    from .memory import format_bytes, largest_batch, parse_size, read_shape

    layers = config.n_gpu_layers if n_gpu_layers is None else n_gpu_layers
    if layers == "auto":
        layers = resolve_gpu_layers(config, model_path, quiet=True)
    if config.max_memory is not None:
        budget = parse_size(config.max_memory)
    elif layers == 0:
        import psutil

        budget = int(0.8 * psutil.virtual_memory().available)
    else:
        if config.split_mode != "none":
            from .shares import gpu_sizes

            free = gpu_sizes(free=True)
            if len(free) > 1:
                return _split_batch(config, model_path, free, layers, quiet=quiet)
        memory = one_gpu_free(config)
        if memory is None:
            raise InputError("--batch-size auto with GPU layers needs --max-memory (the GPU memory to fill)")
        budget = max(0, memory - GPU_RUNTIME_RESERVE)
    batch = largest_batch(read_shape(str(model_path)), ctx=config.sequence_ctx, max_memory=budget,
                          n_gpu_layers=layers, kv_type=config.kv_type)
    if not quiet:
        where = "GPU" if layers else "CPU"
        print(f"aimo-gguf: --batch-size auto: {batch} sequences of {config.sequence_ctx} tokens fit "
              f"{format_bytes(budget)} of {where} memory", file=sys.stderr)
    return batch


def _split_batch(config: RunConfig, model_path: Path, free: list[int], layers: int, *, quiet: bool) -> int:
    """--batch-size auto over several GPUs: the largest batch whose every GPU's share fits its free memory."""
    from .memory import format_bytes, read_shape
    from .shares import device_shares

    shape = read_shape(str(model_path))

    def fits(batch: int) -> bool:
        shares = device_shares(shape, ctx=config.sequence_ctx, batch_size=batch, n_gpu_layers=layers,
                               kv_type=config.kv_type, sizes=free, split_mode=config.split_mode,
                               tensor_split=config.tensor_split_values, main_gpu=config.main_gpu)
        return shares.fits(free, GPU_RUNTIME_RESERVE)

    if not fits(1):
        raise InputError(f"--batch-size auto: even one sequence of {config.sequence_ctx} tokens does not fit "
                         f"{len(free)} GPUs with {layers} layers offloaded: use fewer GPU layers or a shorter --ctx")
    from ..engine.limits import max_sequences

    lo, hi = 1, max_sequences() + 1  # no more sequences than llama.cpp decodes together
    while hi - lo > 1:  # fits(lo), not fits(hi) (or past the limit)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    if not quiet:
        print(f"aimo-gguf: --batch-size auto: {lo} sequences of {config.sequence_ctx} tokens fit {len(free)} GPUs "
              f"({', '.join(format_bytes(f) for f in free)} free, --split-mode {config.split_mode})",
              file=sys.stderr)
    return lo


def load_engine(config: RunConfig, model_path: Path, *, verbose: bool = False, graded: bool = False,
                traces: bool = False, token_budget: int | None = None):
    """The Engine ``config`` describes, on ``model_path`` ('auto' layers and batch resolved);
    ``token_budget`` bounds one step's tokens (None: the engine's default)."""
    from ..engine import Engine

    check_devices(config)
    layers = resolve_gpu_layers(config, model_path)
    batch = resolve_batch_size(config, model_path, n_gpu_layers=layers)
    kwargs = engine_kwargs(config, batch, verbose=verbose, n_gpu_layers=layers, graded=graded, traces=traces)
    if token_budget is not None:
        kwargs["token_budget"] = token_budget
    engine = Engine(model_path, **kwargs)
    if config.ctx and engine.n_ctx_seq != config.ctx:  # llama.cpp sizes a sequence's context in steps of 256
        note = f"--ctx {config.ctx} is {engine.n_ctx_seq} tokens per sequence: llama.cpp sizes it in steps of 256"
        engine.info = replace(engine.info, notes=(*engine.info.notes, note))
    return engine
