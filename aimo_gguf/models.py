"""The registry of recommended models (``models/registry.json``) and where each fits.

Each entry names a Hub repo and file(s), the quantization, the listed size and
the architecture numbers that the memory estimate needs (layers, KV heads,
head size, vocabulary). ``fit()`` finds the most layers (``--n-gpu-layers``)
whose weights and KV cache fit a GPU for a batch and context, with the same
arithmetic as ``aimo-gguf info`` (``aimo_gguf.fit.memory``), the files' sizes
standing in for their headers. It is arithmetic, not a measurement: check a
real run with ``aimo-gguf bench`` on the GPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

from .errors import InputError
from .fit.memory import ModelShape, estimate, format_bytes
from .fit.shares import device_label, parse_devices

# A GPU loses memory to the CUDA context and the driver, beyond what llama.cpp allocates
# (weights, KV cache, compute buffer: all in the estimate). Twice run's GPU_RUNTIME_RESERVE (fit.plan): the
# table fits a card's nominal size, which is more than NVML ever reports free on it.
GPU_RESERVE = 1 * 2**30
DEFAULT_GPUS = ("16GB", "80GB")
REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class Entry:
    name: str
    quant: str
    repo: str
    files: tuple[str, ...]
    size_gb: float
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    ctx_train: int
    license: str
    notes: str = ""
    bytes: int | None = None
    sliding_window: int = 0
    swa_every: int = 0  # layer i has the sliding window when i % swa_every < swa_every - 1
    config: dict | None = None  # the model's Hugging Face config.json numbers (aimo-gguf synth)
    recipe: str = ""  # the --recipe that runs it as its makers recommend (aimo_gguf.recipes)

    @property
    def size_bytes(self) -> int:
        return self.bytes or int(self.size_gb * 1e9)

    def pull_commands(self) -> list[str]:
        """One pull per model: a split model's first part brings the others."""
        from .gguf.parts import is_first_part, part_names

        files = [f for f in self.files if part_names(Path(f).name) is None or is_first_part(Path(f).name)]
        return [f"aimo-gguf pull {self.repo} {f}" for f in files]

    def shape(self) -> ModelShape:
        """A ModelShape from the listed numbers: embeddings and head at the file's mean bits per
        weight, the rest spread evenly over the blocks."""
        n_params_guess = self.size_bytes * 8 / _bits(self.quant)
        config = self.config or {}
        table = int(self.vocab * self.hidden * _bits(self.quant) / 8)
        output = 0 if self.tied_embeddings else table
        blocks = max(self.size_bytes - table - output, 0)
        swa = tuple(bool(self.swa_every) and i % self.swa_every < self.swa_every - 1 for i in range(self.layers))
        return ModelShape(
            name=self.name, file_type=self.quant, n_params=int(n_params_guess), file_bytes=self.size_bytes,
            has_chat_template=True, architecture="", n_layers=self.layers, n_ctx_train=self.ctx_train,
            n_vocab=self.vocab, block_bytes=(blocks // self.layers,) * self.layers, output_bytes=output,
            input_bytes=table, kv_elements=(2 * self.kv_heads * self.head_dim,) * self.layers,
            swa_layers=swa, sliding_window=self.sliding_window, n_embd=self.hidden,
            n_ff=int(config.get("intermediate_size", 4 * self.hidden)), n_experts_used=int(config.get(
                "num_experts_per_tok", 0) or 0), n_merges=self.vocab,
        )


@dataclass(frozen=True)
class Fit:
    """The most GPU layers of ``entry`` that fit ``gpu_bytes`` for a configuration."""

    entry: Entry
    gpu_bytes: int
    ctx: int
    batch_size: int
    n_gpu_layers: int  # -1 = every layer and the output head; 0 = none fits
    gpu_used: int  # bytes on the GPU at that many layers, reserve included

    @property
    def label(self) -> str:
        if self.n_gpu_layers < 0:
            return "all (-ngl -1)"
        if self.n_gpu_layers == 0:
            return "CPU only"
        return f"-ngl {self.n_gpu_layers} of {self.entry.layers}"


def load_registry(path: str | Path | None = None) -> list[Entry]:
    """The registry entries (the bundled ``registry.json`` unless ``path``)."""
    try:
        text = Path(path).read_text(encoding="utf-8") if path else \
            files("aimo_gguf").joinpath("data", REGISTRY_FILE).read_text(encoding="utf-8")
        data = json.loads(text)
        return [Entry(**{**m, "files": tuple(m["files"])}) for m in data["models"]]
    except FileNotFoundError:
        raise InputError(f"{path}: no such registry file") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"the model registry is malformed ({e})") from None


def fit(entry: Entry, gpu_bytes: int, *, ctx: int, batch_size: int, kv_type: str = "f16", n_gpus: int = 1) -> Fit:
    """The most layers to offload so that weights, KV cache, compute buffer and reserve fit ``gpu_bytes``
    (on each of ``n_gpus`` GPUs of that size, split by layer: ``gpu_used`` is then the fullest one's)."""
    from .fit.plan import most_layers

    shape = entry.shape()
    best, shares = most_layers(shape, sizes=[gpu_bytes] * n_gpus, ctx=ctx, batch_size=batch_size, kv_type=kv_type,
                               reserve=GPU_RESERVE)
    if not best:
        return Fit(entry, gpu_bytes, ctx, batch_size, 0, 0)
    on_gpu = max(shares.per_device) if shares is not None else estimate(
        shape, ctx=ctx, batch_size=batch_size, n_gpu_layers=best, kv_type=kv_type).gpu
    return Fit(entry, gpu_bytes, ctx, batch_size, best, on_gpu + GPU_RESERVE)


def fits_table(entries: list[Entry], gpus: list[str], *, ctx: int, batch_size: int, kv_type: str = "f16") -> str:
    """One row per entry: size, context used, and the offload that fits each GPU."""
    sizes = [parse_devices(g) for g in gpus]
    header = ["model", "quant", "size", "recipe", "ctx"] + [device_label(g) for g in gpus]
    rows = []
    for e in entries:
        c = min(ctx, e.ctx_train)
        rows.append([e.name, e.quant, format_bytes(e.size_bytes), e.recipe or "-", str(c)]
                    + [fit(e, s, ctx=c, batch_size=batch_size, kv_type=kv_type, n_gpus=n).label for n, s in sizes])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def fits_json(entries: list[Entry], gpus: list[str], *, ctx: int, batch_size: int, kv_type: str = "f16") -> list:
    out = []
    for e in entries:
        c = min(ctx, e.ctx_train)
        fits = {g: fit(e, parse_devices(g)[1], ctx=c, batch_size=batch_size, kv_type=kv_type,
                       n_gpus=parse_devices(g)[0]) for g in gpus}
        out.append({**asdict(e), "ctx": c, "batch_size": batch_size, "kv_type": kv_type,
                    "pull": e.pull_commands(),
                    "fits": {g: {"n_gpu_layers": f.n_gpu_layers, "gpu_bytes": f.gpu_used} for g, f in fits.items()}})
    return out


def _bits(quant: str) -> float:
    from .convert import BITS_PER_WEIGHT

    return BITS_PER_WEIGHT.get(quant.upper(), 8.5)

