"""``aimo-gguf info``: what a GGUF file is and what a configuration of it needs.

Everything comes from the file's header and a simulated load (llama.cpp's
``no_alloc``: no weights are read, nothing is allocated), so it answers in a
moment even for a model larger than this machine's memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .config import RunConfig
from .fit.memory import MemoryEstimate, ModelShape, format_bytes, measure, read_shape
from .fit.shares import DeviceShares, device_shares, gpu_sizes
from .gguf.files import resolve_model


@dataclass(frozen=True)
class ModelInfo:
    """A GGUF file and the memory estimate of one configuration."""

    path: str
    shape: ModelShape
    ctx: int  # context of one sequence
    batch_size: int
    kv_type: str
    n_gpu_layers_requested: int | str
    estimate: MemoryEstimate
    devices: DeviceShares | None = None  # each GPU's share, with several GPUs (--gpus, or NVML's)

    def to_dict(self) -> dict:
        shape = asdict(self.shape)
        for bulky in ("block_bytes", "kv_elements", "swa_layers", "block_repack"):
            shape.pop(bulky)
        est = self.estimate
        return {
            "path": self.path,
            **shape,
            "weight_bytes": self.shape.weight_bytes,
            "ctx": self.ctx,
            "batch_size": self.batch_size,
            "kv_type": self.kv_type,
            "n_gpu_layers_requested": self.n_gpu_layers_requested,
            "estimate": {**asdict(est), "cpu": est.cpu, "gpu": est.gpu, "total": est.total},
            "files": [str(f) for f in self.files],
            "prompt_style": self.prompt_style,
            "per_gpu": None if self.devices is None else [
                {"gpu": i, "bytes": b, "layers": n} for i, (b, n) in enumerate(zip(self.devices.per_device,
                                                                                 self.devices.layers))],
        }

    @property
    def prompt_style(self) -> str:
        """The prompt family run would detect: harmony, think or plain (``aimo_gguf.styles.prompts.detect_style``)."""
        from .gguf.header import read_header
        from .styles.prompts import detect_style

        fields = read_header(self.path).fields
        template, name = fields.get("tokenizer.chat_template"), fields.get("general.name")
        return detect_style(self.shape.architecture, template if isinstance(template, str) else None,
                            name if isinstance(name, str) else "")  # what run sees: general.name or nothing

    @property
    def files(self) -> list[Path]:
        """The model's files: one, or every part of a split model."""
        from .gguf.parts import model_files

        return model_files(self.path)

    def table(self) -> str:
        s, est = self.shape, self.estimate
        window = f", sliding window {s.sliding_window} on {sum(s.swa_layers)} layers" if s.sliding_window else ""
        rows = [
            ("file", self.path),
            ("name", s.name),
            ("architecture", f"{s.architecture}, {s.n_layers} layers{window}"),
            ("parameters", f"{s.n_params / 1e9:.2f} B" if s.n_params >= 1e9 else f"{s.n_params / 1e6:.0f} M"),
            ("file type", s.file_type),
            ("size", format_bytes(s.file_bytes) + (f" in {len(self.files)} parts" if len(self.files) > 1 else "")),
            ("trained context", f"{s.n_ctx_train} tokens"),
            ("chat template", "yes" if s.has_chat_template else "no (use --raw-prompt)"),
            ("prompt style", f"{self.prompt_style} (--prompt-style auto; aimo-gguf recipes for the settings)"),
            ("configuration", f"{self.batch_size} sequences x {self.ctx} tokens, KV {self.kv_type}, "
                              f"{est.n_gpu_layers} of {s.n_layers + 1} layers on the GPU"),
            ("KV per sequence", format_bytes(est.kv_per_sequence)),
            ("GPU", f"{format_bytes(est.gpu)} (weights {format_bytes(est.weights_gpu)}, KV {format_bytes(est.kv_gpu)}, "
                    f"compute {format_bytes(est.compute_gpu)})"),
            ("CPU", f"{format_bytes(est.cpu)} (weights {format_bytes(est.weights_cpu)} mapped + "
                    f"{format_bytes(est.repack_cpu)} repacked, KV {format_bytes(est.kv_cpu)}, "
                    f"compute {format_bytes(est.compute_cpu)}, logits and samplers "
                    f"{format_bytes(est.output + est.samplers)}, vocabulary and runtime "
                    f"{format_bytes(est.vocab + est.overhead)})"),
        ]
        if self.devices is not None:
            rows.insert(rows.index(next(r for r in rows if r[0] == "GPU")) + 1, ("per GPU", ", ".join(
                f"GPU{i} {format_bytes(b)} ({n} layers)"
                for i, (b, n) in enumerate(zip(self.devices.per_device, self.devices.layers)))))
        if s.synthetic_like:
            rows.insert(2, ("synthetic", f"random weights with the shapes of {s.synthetic_like} (aimo-gguf synth)"))
        width = max(len(k) for k, _ in rows)
        source = {"llama.cpp": "compute buffers and vocabulary from a simulated llama.cpp load",
                  "arithmetic": "compute buffers from a formula: this llama.cpp cannot simulate a load"}.get(
            est.source, "logits and vocabulary from a simulated llama.cpp load, compute buffers from a formula: "
                        "this build has no GPU to simulate")
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + f"\n{'':<{width}}  ({source})"


def describe(
    model: str | Path | None = None,
    *,
    config: RunConfig | None = None,
    gpus: str | None = None,
    **options,
) -> ModelInfo:
    """Describe ``model`` (default: the embedded one) under ``config`` (RunConfig fields as keywords)."""
    from .fit.plan import plan_load

    config = config or RunConfig(model=None if model is None else str(model), **options)
    path = resolve_model(config.model)
    # --gpus: the GPUs asked about, not the ones NVML sees
    plan = plan_load(config, path, gpus=None if gpus is None else gpu_sizes(gpus))
    plan.say()
    layers, batch = plan.n_gpu_layers, plan.batch_size
    return ModelInfo(
        path=str(path),
        shape=read_shape(str(path)),
        ctx=config.sequence_ctx,
        batch_size=batch,
        kv_type=config.kv_type,
        n_gpu_layers_requested=config.n_gpu_layers,
        estimate=measure(path, ctx=config.sequence_ctx, batch_size=batch, n_gpu_layers=layers,
                         kv_type=config.kv_type, flash_attn=config.flash_attn, kv_unified=config.kv_unified),
        devices=per_gpu(config, path, gpus, n_gpu_layers=layers, batch_size=batch),
    )


def per_gpu(config: RunConfig, path: Path, gpus: str | None, *, n_gpu_layers: int,
            batch_size: int) -> DeviceShares | None:
    """Each GPU's share of the estimate: over ``gpus`` (sizes like 15GB,15GB or 2x15GB), else over the
    GPUs NVML sees when there are several; None for one GPU or none."""
    sizes = gpu_sizes(gpus)
    if len(sizes) < 2:
        return None
    return device_shares(read_shape(str(path)), ctx=config.sequence_ctx, batch_size=batch_size,
                         n_gpu_layers=n_gpu_layers, kv_type=config.kv_type, sizes=sizes,
                         split_mode=config.split_mode, tensor_split=config.tensor_split_values,
                         main_gpu=config.main_gpu)
