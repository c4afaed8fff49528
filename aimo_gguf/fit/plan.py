"""From a RunConfig to a loaded engine: one load plan, then the engine's options, then the load.

``plan_load`` reads the GGUF header once, asks NVML once, and decides what
'auto' leaves open (``--n-gpu-layers auto``, ``--batch-size auto``) over one
GPU or several; ``engine_options`` turns a RunConfig and its plan into the
``EngineOptions`` the engine is built from (and a child process could rebuild
it from); ``load_engine`` does all three. The engine itself keeps only the
fallback ladder (fewer GPU layers when a load fails).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..config import RunConfig
from ..engine.api import DEFAULT_SPLIT_MODE, EngineOptions
from ..errors import InputError
from ..styles.prompts import RAW_PROMPT_STOPS
from .shares import DeviceShares

GPU_RUNTIME_RESERVE = 512 * 2**20  # CUDA's own context and the driver: not in llama.cpp's accounting


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What one engine's load was planned to be."""

    n_gpu_layers: int  # layers to offload (-1: all), 'auto' resolved
    batch_size: int  # sequences decoded together, 'auto' resolved
    shares: DeviceShares | None  # each GPU's bytes where the model spreads over several GPUs, else None
    notes: tuple[str, ...]  # what 'auto' decided, said once on stderr (``say``)
    n_ctx_train: int  # the model's trained context, from the header (0: it does not say)
    n_layers: int | None = None  # the model's transformer blocks, from the header (None: unreadable)

    def say(self) -> None:
        for note in self.notes:
            print(f"aimo-gguf: {note}", file=sys.stderr)


@dataclass(frozen=True, slots=True)
class _Devices:
    """The GPUs one plan sees: asked once."""

    offload: bool  # this llama.cpp build offloads
    free: tuple[int, ...]  # free bytes of each visible GPU (NVML), in llama.cpp's order; () without NVML

    def several(self, config: RunConfig) -> bool:
        """Whether 'auto' spreads the model over several GPUs (not with a --max-memory budget)."""
        return self.offload and config.max_memory is None and config.split_mode != "none" and len(self.free) > 1

    def one(self, config: RunConfig) -> tuple[int | None, int]:
        """The free bytes of the GPU one engine uses alone (``--main-gpu`` with ``--split-mode none``, else
        the first; None without NVML) and its index."""
        index = config.main_gpu if config.split_mode == "none" else 0
        return (self.free[index] if index < len(self.free) else None), index


def plan_load(config: RunConfig, model_path: Path, *, gpus: Sequence[int] | None = None) -> LoadPlan:
    """The load ``config`` asks for on ``model_path``: 'auto' layers and batch resolved against the GPUs'
    free memory (or ``--max-memory``), the device options and the context checked, before any load.
    ``gpus``: the free bytes of GPUs to plan for instead of those NVML sees (``info --gpus``)."""
    from ..engine.limits import check_context, context_length
    from ..gguf.header import read_header

    devices = _devices() if gpus is None else _Devices(True, tuple(gpus))
    _check_devices(config, devices)
    try:
        header = read_header(model_path)
    except Exception:  # no header to read (the fakes of the tests): the engine says what is wrong
        header = None
    n_ctx_train = (context_length(header.fields) if header is not None else None) or 0
    n_layers = _block_count(header)
    batch_asked = config.batch_size if isinstance(config.batch_size, int) else 1
    check_context(model_path, ctx=config.sequence_ctx, batch_size=batch_asked, what=config.ctx_source,
                  n_ctx_train=n_ctx_train)
    if "auto" not in (config.n_gpu_layers, config.batch_size):
        return LoadPlan(config.n_gpu_layers, config.batch_size, None, (), n_ctx_train, n_layers)
    from .memory import read_shape, shape_of

    shape = shape_of(header, model_path) if header is not None else read_shape(str(model_path))
    notes: list[str] = []
    layers = _layers(config, shape, devices, notes)
    batch = _batch(config, shape, devices, layers, notes)
    shares = None
    if devices.several(config) and layers != 0:
        from .shares import device_shares

        shares = device_shares(shape, ctx=config.sequence_ctx, batch_size=batch, n_gpu_layers=layers,
                               kv_type=config.kv_type, sizes=devices.free, split_mode=config.split_mode,
                               tensor_split=config.tensor_split_values, main_gpu=config.main_gpu)
    return LoadPlan(layers, batch, shares, tuple(notes), n_ctx_train, n_layers)


def _block_count(header) -> int | None:
    if header is None:
        return None
    fields = header.fields
    try:
        count = int(fields[f"{fields['general.architecture']}.block_count"])
    except (KeyError, TypeError, ValueError):
        return None
    return count if count > 0 else None


def _devices() -> _Devices:
    from ..engine.llama import supports_gpu_offload
    from .gpus import gpu_memories, gpu_memory

    if not supports_gpu_offload():
        return _Devices(False, ())
    free = [m[2] for m in gpu_memories()]
    if not free:  # visible GPUs named other than by index (UUIDs): the first one, as llama.cpp counts
        first = gpu_memory()
        free = [first[2]] if first is not None else []
    return _Devices(True, tuple(free))


def _check_devices(config: RunConfig, devices: _Devices) -> None:
    """--main-gpu and --tensor-split against the GPUs there are and llama.cpp's device array (a CPU build:
    nothing, the engine ignores them with a note; no NVML: the device array alone)."""
    from ..engine.limits import check_tensor_split

    if not devices.offload:
        return
    visible = len(devices.free) or None
    if visible and config.main_gpu >= visible:
        raise InputError(f"--main-gpu {config.main_gpu}: only {visible} GPU(s) are visible (0 to {visible - 1})")
    check_tensor_split(config.tensor_split_values, visible=visible)


def _layers(config: RunConfig, shape, devices: _Devices, notes: list[str]) -> int:
    """``config.n_gpu_layers``, 'auto' replaced by the most layers whose memory estimate fits the GPUs' free
    memory or ``--max-memory`` (at a batch of 1 with ``--batch-size auto``, which then fills what is left)."""
    from .memory import format_bytes, parse_size

    if config.n_gpu_layers != "auto":
        return config.n_gpu_layers
    if not devices.offload:
        notes.append("--n-gpu-layers auto: this llama-cpp-python build cannot offload: 0 layers (CPU)")
        return 0
    batch, ctx = (1 if config.batch_size == "auto" else config.batch_size), config.sequence_ctx
    fit = f"with {batch} x {ctx} tokens"
    if devices.several(config):
        layers, shares = most_layers(shape, sizes=devices.free, ctx=ctx, batch_size=batch, kv_type=config.kv_type,
                                     split_mode=config.split_mode, tensor_split=config.tensor_split_values,
                                     main_gpu=config.main_gpu)
        each = ", ".join(f"GPU{i} {format_bytes(b)} of {format_bytes(f)} free"
                         for i, (b, f) in enumerate(zip(shares.per_device, devices.free)))
        where = f"{len(devices.free)} GPUs (--split-mode {config.split_mode}) {fit}: {each}"
    else:
        if config.max_memory is not None:
            budget, named = parse_size(config.max_memory), "--max-memory"
        else:
            free, gpu = devices.one(config)
            if free is None:
                raise InputError("--n-gpu-layers auto needs the GPU's free memory (install nvidia-ml-py) "
                                 "or --max-memory")
            budget, named = max(0, free - GPU_RUNTIME_RESERVE), f"GPU {gpu}'s free memory"
        layers, _ = most_layers(shape, sizes=[budget], ctx=ctx, batch_size=batch, kv_type=config.kv_type, reserve=0)
        where = f"{format_bytes(budget)} ({named}) {fit}"
    shown = "all" if layers < 0 else str(layers)
    notes.append(f"--n-gpu-layers auto: {shown} of {shape.n_layers + 1} layers fit {where}")
    return layers


def most_layers(shape, *, sizes: Sequence[int], ctx: int, batch_size: int, kv_type: str = "f16",
                split_mode: str = DEFAULT_SPLIT_MODE, tensor_split: Sequence[float] | None = None, main_gpu: int = 0,
                reserve: int = GPU_RUNTIME_RESERVE) -> tuple[int, DeviceShares | None]:
    """The most layers to offload (-1: all, 0: none) onto GPUs of ``sizes`` bytes, each keeping ``reserve``:
    over several GPUs (not --split-mode none) every GPU's share must fit, and the shares come back; over one
    (``main_gpu``'s with --split-mode none) the GPU part of the estimate, and None. The several-GPU rule of
    ``run``, ``info --gpus`` and the ``models`` table alike."""
    from .memory import most_gpu_layers
    from .shares import most_gpu_layers_split

    if split_mode != "none" and len(sizes) > 1:
        return most_gpu_layers_split(shape, ctx=ctx, batch_size=batch_size, sizes=sizes, kv_type=kv_type,
                                     split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu,
                                     reserve=reserve)
    size = sizes[main_gpu if split_mode == "none" and main_gpu < len(sizes) else 0]
    budget = max(0, size - reserve)
    return most_gpu_layers(shape, ctx=ctx, batch_size=batch_size, max_memory=budget, kv_type=kv_type), None


def _batch(config: RunConfig, shape, devices: _Devices, layers: int, notes: list[str]) -> int:
    """``config.batch_size``, 'auto' replaced by the largest batch the memory budget holds with ``layers``."""
    from .memory import format_bytes, largest_batch, parse_size

    if config.batch_size != "auto":
        return config.batch_size
    ctx = config.sequence_ctx
    if config.max_memory is not None:
        budget = parse_size(config.max_memory)
    elif layers == 0:
        import psutil

        budget = int(0.8 * psutil.virtual_memory().available)
    elif devices.several(config):
        return _split_batch(config, shape, devices.free, layers, notes)
    else:
        free, _ = devices.one(config)
        if free is None:
            raise InputError("--batch-size auto with GPU layers needs --max-memory (the GPU memory to fill)")
        budget = max(0, free - GPU_RUNTIME_RESERVE)
    batch = largest_batch(shape, ctx=ctx, max_memory=budget, n_gpu_layers=layers, kv_type=config.kv_type)
    notes.append(f"--batch-size auto: {batch} sequences of {ctx} tokens fit {format_bytes(budget)} of "
                 f"{'GPU' if layers else 'CPU'} memory")
    return batch


def _split_batch(config: RunConfig, shape, free: tuple[int, ...], layers: int, notes: list[str]) -> int:
    """--batch-size auto over several GPUs: the largest batch whose every GPU's share fits its free memory."""
    from ..engine.limits import max_sequences
    from .memory import format_bytes
    from .shares import device_shares

    def fits(batch: int) -> bool:
        shares = device_shares(shape, ctx=config.sequence_ctx, batch_size=batch, n_gpu_layers=layers,
                               kv_type=config.kv_type, sizes=free, split_mode=config.split_mode,
                               tensor_split=config.tensor_split_values, main_gpu=config.main_gpu)
        return shares.fits(free, GPU_RUNTIME_RESERVE)

    if not fits(1):
        raise InputError(f"--batch-size auto: even one sequence of {config.sequence_ctx} tokens does not fit "
                         f"{len(free)} GPUs with {layers} layers offloaded: use fewer GPU layers or a shorter --ctx")
    lo, hi = 1, max_sequences() + 1  # no more sequences than llama.cpp decodes together
    while hi - lo > 1:  # fits(lo), not fits(hi) (or past the limit)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    notes.append(f"--batch-size auto: {lo} sequences of {config.sequence_ctx} tokens fit {len(free)} GPUs "
                 f"({', '.join(format_bytes(f) for f in free)} free, --split-mode {config.split_mode})")
    return lo


def engine_options(config: RunConfig, model_path: Path, *, batch_size: int, n_gpu_layers: int | None = None,
                   graded: bool = False, traces: bool = False, **engine) -> EngineOptions:
    """The EngineOptions a RunConfig stands for on ``model_path``: ``batch_size`` and ``n_gpu_layers`` as a
    plan resolved them (default: the config's); ``graded`` (the problems have answers) and ``traces`` turn
    the automatic confidence on; ``engine``: more EngineOptions fields (verbose, token_budget, ...).

    A field both declare (threads, kv_type, sampler, ...) goes through as it is, so an engine option
    added to both reaches the engine without a line here; the others are resolved from the config."""
    resolved = dict(
        model_path=str(model_path),
        n_gpu_layers=config.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
        ctx=config.sequence_ctx,
        batch_size=batch_size,
        stop=config.stop + (RAW_PROMPT_STOPS if config.raw_prompt else ()),
        confidence=config.confidence_settings(graded=graded, traces=traces),
        tensor_split=config.tensor_split_values,
    )
    shared = {f.name for f in fields(EngineOptions)} & {f.name for f in fields(RunConfig)}
    same = {name: getattr(config, name) for name in shared - resolved.keys() - engine.keys()}
    return EngineOptions(**same, **resolved, **engine)


def load_engine(config: RunConfig, model_path: Path, *, verbose: bool = False, graded: bool = False,
                traces: bool = False, token_budget: int | None = None, plan: LoadPlan | None = None):
    """The Engine ``config`` describes, on ``model_path``, loaded as ``plan`` says (default: planned here);
    ``token_budget`` bounds one step's tokens (None: the engine's default)."""
    from ..engine.engine import Engine

    plan = plan or plan_load(config, model_path)
    plan.say()
    extra = {} if token_budget is None else {"token_budget": token_budget}
    options = engine_options(config, model_path, batch_size=plan.batch_size, n_gpu_layers=plan.n_gpu_layers,
                             graded=graded, traces=traces, verbose=verbose, n_ctx_train=plan.n_ctx_train,
                             n_layers=plan.n_layers, **extra)
    engine = Engine(options)
    if config.ctx and engine.n_ctx_seq != config.ctx:  # llama.cpp sizes a sequence's context in steps of 256
        note = f"--ctx {config.ctx} is {engine.n_ctx_seq} tokens per sequence: llama.cpp sizes it in steps of 256"
        engine.info = replace(engine.info, notes=(*engine.info.notes, note))
    return engine


def load_engine_pool(config: RunConfig, replicas: int, *, verbose: bool = False, token_budget: int | None = None):
    """One engine per GPU (GPU i holds engine i whole: --split-mode none, --main-gpu i) as one EnginePool,
    each with ceil(samples / replicas) sequences, so a problem's samples split evenly and share one vote
    (the AIMO3 adapter's ``replicas=N``). On a CPU build each engine gets its share of the threads instead."""
    from ..engine import default_threads
    from ..engine.llama import supports_gpu_offload
    from ..engine.pool import EnginePool
    from ..gguf.files import resolve_model
    from .gpus import gpu_memories

    path = resolve_model(config.model)
    offload = supports_gpu_offload()
    if offload:
        visible = len(gpu_memories())
        if visible and replicas > visible:
            raise InputError(f"replicas={replicas} needs one GPU each, and {visible} GPU(s) are visible")
    batch = -(-config.samples // replicas)
    threads = config.threads or max(1, default_threads() // (1 if offload else replicas))
    engines = []
    try:
        for i in range(replicas):
            gpu = dict(split_mode="none", main_gpu=i) if offload else {}
            engines.append(load_engine(replace(config, batch_size=batch, threads=threads, **gpu), path,
                                       verbose=verbose, token_budget=token_budget))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    print(f"aimo-gguf: {replicas} replicas of the model, {batch} sequences each: a problem's samples are shared "
          f"out and voted on together", file=sys.stderr)
    return EnginePool(engines)
