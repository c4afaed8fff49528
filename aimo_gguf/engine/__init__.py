"""The batched llama.cpp engine, in layers.

- ``api``: requests, completions, counters and the ``BatchEngine`` interface (plain Python);
- ``llama`` and ``llama_samplers``: owning wrappers over llama.cpp's C objects (its samplers in the
  second), the C log and the quantize call (the only code in aimo-gguf that touches ``llama_cpp``'s C API);
- ``sequence``: one running sequence, its state and stop strings;
- ``confidence``: per-token confidence signals over a step's logits, and their running aggregates;
- ``sampling``: a step's rows sampled at once in NumPy, with their confidence signals;
- ``samplers``: which sampler each sequence gets, and a step's draw (batched, chain or backend);
- ``scheduler``: admission, queue, KV accounting, prompt sharing and preemption (plain Python);
- ``engine``: ``Engine``, which loads a model and executes the scheduler's plans.
"""

from .api import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CTX,
    DEFAULT_MAX_PREEMPTIONS,
    DEFAULT_TOKEN_BUDGET,
    FINISH_CANCELLED,
    FINISH_EOS,
    FINISH_KV_FULL,
    FINISH_LENGTH,
    FINISH_LOW_CONFIDENCE,
    FINISH_REASONS,
    FINISH_STOP,
    FINISH_TOO_LONG,
    FLASH_ATTN_MODES,
    KV_TYPES,
    PROMPT_ALLOWANCE,
    SAMPLER_PATHS,
    BatchEngine,
    Completion,
    EngineStats,
    LoadInfo,
    Request,
    SamplingParams,
    ToolHook,
)
from .engine import Engine, default_threads, layer_ladder
from .llama import quantize_file, set_verbose

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_CTX", "DEFAULT_MAX_PREEMPTIONS", "DEFAULT_TOKEN_BUDGET", "FINISH_CANCELLED",
    "FINISH_EOS", "FINISH_KV_FULL", "FINISH_LENGTH", "FINISH_LOW_CONFIDENCE", "FINISH_REASONS", "FINISH_STOP",
    "FINISH_TOO_LONG",
    "FLASH_ATTN_MODES", "KV_TYPES", "PROMPT_ALLOWANCE", "SAMPLER_PATHS", "BatchEngine", "Completion", "Engine", "EngineStats",
    "LoadInfo", "Request", "SamplingParams", "ToolHook", "default_threads", "layer_ladder", "quantize_file",
    "set_verbose",
]
