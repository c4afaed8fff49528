"""The batched llama.cpp engine, in layers.

- ``api``: requests, completions, counters, the engine's options and lists of choices, and the
  ``BatchEngine`` interface (plain Python);
- ``llama`` and ``llama_samplers``: owning wrappers over llama.cpp's C objects (its samplers in the
  second), the C log and the quantize call; with ``simulate``, ``probe`` and ``backends`` the only code
  in aimo-gguf that touches ``llama_cpp``'s C API;
- ``limits``: llama.cpp's limits and the trained context, checked before a load; ``default_threads``;
- ``simulate``: what llama.cpp would reserve for a configuration, without allocating it;
- ``probe``: does this build trap on this CPU? a short decode in a child process, its verdict cached;
- ``backends``: the binding's version, its library folder and a portable build's CPU backends;
- ``slot``: one running sequence (a slot of the context), its state and stop strings;
- ``confidence``: per-token confidence signals over a step's logits, and their running aggregates;
- ``sampling``: a step's rows sampled at once in NumPy, with their confidence signals;
- ``samplers``: which sampler each sequence gets, and a step's draw (batched, chain or backend);
- ``scheduler``: admission, queue, KV accounting, prompt sharing and preemption (plain Python);
- ``engine``: ``Engine``, which loads a model and executes the scheduler's plans;
- ``pool``: ``EnginePool``, engines in threads sharing one problem's samples.

Importing the package loads nothing of llama.cpp: ``Engine``, ``quantize_file`` and the other names
that need it are imported on first use (PEP 562), so ``aimo_gguf.config`` and the plain-Python layers
stay cheap to import.
"""

from importlib import import_module

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
    SPLIT_MODES,
    BatchEngine,
    Completion,
    EngineOptions,
    EngineStats,
    Finish,
    LoadInfo,
    Request,
    SamplingParams,
    ToolHook,
)
from .limits import default_threads

# The names that load llama.cpp, and the module each comes from.
_LAZY = {"Engine": ".engine", "layer_ladder": ".engine",
         "quantize_file": ".llama", "set_verbose": ".llama"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_CTX", "DEFAULT_MAX_PREEMPTIONS", "DEFAULT_TOKEN_BUDGET", "FINISH_CANCELLED",
    "FINISH_EOS", "FINISH_KV_FULL", "FINISH_LENGTH", "FINISH_LOW_CONFIDENCE", "FINISH_REASONS", "FINISH_STOP",
    "FINISH_TOO_LONG", "FLASH_ATTN_MODES", "KV_TYPES", "PROMPT_ALLOWANCE", "SAMPLER_PATHS", "SPLIT_MODES",
    "BatchEngine", "Completion", "Engine", "EngineOptions", "EngineStats", "Finish", "LoadInfo", "Request",
    "SamplingParams", "ToolHook", "default_threads", "layer_ladder", "quantize_file", "set_verbose",
]
