"""aimo-gguf: batched olympiad-math solving with quantized GGUF models through llama.cpp.

The library API, imported lazily (``import aimo_gguf`` stays cheap; llama.cpp
loads with the first name that needs it)::

    from aimo_gguf import run, RunConfig, Engine, Solver, KaggleSolver
    result = run("problems.csv", n_gpu_layers=40, samples=8, output="submission.csv")
"""

__version__ = "0.1.0"

_EXPORTS = {
    "run": "pipeline.runner", "RunResult": "pipeline.runner", "RunConfig": "config", "Solver": "solving.solver",
    "solve": "solving.solver", "ProblemResult": "solving.solver", "Engine": "engine", "Request": "engine",
    "Completion": "engine", "SamplingParams": "engine", "KaggleSolver": "kaggle",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aimo_gguf' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
