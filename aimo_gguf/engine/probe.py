"""Does this llama.cpp build trap on this CPU? A short decode in a child process, its verdict cached.

Some CPUs advertise Intel AMX where it cannot run (virtual machines, mostly):
llama-cpp-python built with ``-march=native`` there dies with ``Illegal
instruction`` at the first ``llama_decode`` of a Q4_0/Q4_1/Q8_0/K-quant model,
inside the CPU backend's extra buffer types (the AMX matrix kernels, next to
weight repacking), and takes the run with it. So before the first real load the
engine asks ``extra_buffers_verdict``: a child process writes a tiny model
whose layers use every type with AMX kernels (ggml-cpu's
``qtype_has_amx_kernels``), loads it with the extra buffer types on, and
decodes a prompt and two single tokens. A child killed by a signal means the
build traps here: the engine then loads with ``use_extra_bufts = false``
(llama.cpp's ``--no-repack``) and says so once. The verdict is kept per
llama.cpp library build and CPU in ``$AIMO_GGUF_CACHE`` (default
``~/.cache/aimo-gguf``), so the child runs once per machine and build.

Narrower than ``--no-repack`` (AMX off, repacking kept) is not on offer: the
extra buffer types are one switch in ``llama_model_params``; a
``tensor_buft_overrides`` entry naming the CPU buffer type brings the extra
types (AMX first) back, and one naming CPU_REPACK makes llama.cpp repack
whatever the pattern matches, asserting on the tensors it cannot repack.

``AIMO_GGUF_PROBE_FAULT=sigill`` (tests only) makes the child execute an
illegal instruction just before its first decode.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_ENV = "AIMO_GGUF_CACHE"
FAULT_ENV = "AIMO_GGUF_PROBE_FAULT"
PROBE_TIMEOUT = 300  # seconds; a child this slow says nothing about traps
# ggml-cpu's qtype_has_amx_kernels: one probe layer each, so every AMX kernel runs
AMX_TYPES = ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")
PROMPT_TOKENS = 32  # AMX tiles take over from the VNNI kernels above 4 rows: a prompt, not one token


@dataclass(frozen=True)
class Verdict:
    """What the probe found for one llama.cpp build on one CPU."""

    traps: bool  # the child died of a signal: load without the extra buffer types
    detail: str  # what happened, for the note and the cache
    cached: bool = False  # read from the cache, no child run this time

    @property
    def note(self) -> str:
        return (f"this llama.cpp build dies on this CPU in its extra CPU buffer types ({self.detail}): "
                "loading with --no-repack (no weight repacking, no AMX); prompts run slower")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aimo-gguf")


def build_key() -> str:
    """A name for this llama.cpp build (its libraries' names, sizes and times, its CPU features) on this
    CPU (its model and flags)."""
    from . import llama
    from .backends import binding_version, library_dir

    libs = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in library_dir().glob("*ggml*")
                  if p.is_file())
    libs += sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in library_dir().glob("*llama*")
                   if p.is_file())
    identity = [binding_version(), libs, sorted(llama.cpu_features()), _cpu_identity()]
    return hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:20]


def _cpu_identity() -> list[str]:
    """The first processor's model and flags (Linux), else what platform knows."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return [platform.machine(), platform.processor()]
    keep = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part")
    return [line for line in block.splitlines() if line.split(":", 1)[0].strip() in keep]


def extra_buffers_verdict() -> Verdict:
    """The cached verdict for this build and CPU, or a fresh probe's (cached when it is conclusive)."""
    path = cache_dir() / "cpu-probe" / f"{build_key()}.json"
    try:
        saved = json.loads(path.read_text())
        return Verdict(traps=bool(saved["traps"]), detail=str(saved["detail"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    verdict = run_probe()
    if verdict is not None:
        _save(path, verdict)
        return verdict
    return Verdict(traps=False, detail="the probe was inconclusive")


def run_probe() -> Verdict | None:
    """Run the child; None when it failed for another reason than a signal (nothing learned)."""
    with tempfile.TemporaryDirectory(prefix="aimo-gguf-probe-") as work:
        try:
            done = subprocess.run([sys.executable, "-m", __name__, work], capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT, env=_child_env())
        except (OSError, subprocess.TimeoutExpired):
            return None
    if done.returncode == 0:
        return Verdict(traps=False, detail="a prompt and two tokens decoded with every AMX type")
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return Verdict(traps=True, detail=f"a probe decode died of {name}")
    return None


def _child_env() -> dict:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # this aimo_gguf, also when run from a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _save(path: Path, verdict: Verdict) -> None:
    """Keep the verdict (atomically); a cache that cannot be written only costs a probe next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps({k: v for k, v in asdict(verdict).items() if k != "cached"}))
        os.replace(part, path)
    except OSError:
        pass


def open_llama(path: str | Path, *, repack: bool = True, **kwargs):
    """``llama_cpp.Llama(path, **kwargs)`` (the bench's baseline, the tests' reference), with the extra buffer
    types off where the probe finds they die here, or when ``repack`` is False: Llama builds its own
    ``llama_model_params`` from the binding's defaults and has no keyword for them."""
    import llama_cpp
    import llama_cpp.llama_cpp as binding

    extra = repack and not extra_buffers_verdict().traps
    default = binding.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = extra
        return p

    binding.llama_model_default_params = params
    try:
        return llama_cpp.Llama(str(path), **kwargs)
    finally:
        binding.llama_model_default_params = default


# --- the child ------------------------------------------------------------------------------------------------


def write_probe_model(path: Path) -> Path:
    """A tiny llama model: layer i's matrices in AMX_TYPES[i], zero weights (every kernel runs, no NaN),
    the embedded tokenizer, tied Q8_0 embeddings; shapes that meet the AMX kernels' alignment."""
    import gguf
    import numpy as np

    from ..gguf.synthetic import (
        F32,
        SynthSpec,
        add_tokenizer,
        tensors_of,
        tokenizer_fields,
        write_metadata,
    )

    fields = tokenizer_fields(None)
    spec = SynthSpec(name="cpu probe", architecture="llama", hidden=256, layers=len(AMX_TYPES), heads=4,
                     kv_heads=4, head_dim=64, ffn=512, vocab=len(fields["tokenizer.ggml.tokens"]),
                     tied_embeddings=True, ctx_train=256, rope_theta=10000.0, rms_eps=1e-5)
    writer = gguf.GGUFWriter(str(path), "llama")
    try:
        write_metadata(writer, spec)
        add_tokenizer(writer, fields, pad=0)
        for name, shape, kind in tensors_of(spec):
            if kind == F32:
                writer.add_tensor(name, np.ones(shape, dtype=np.float32))
                continue
            layer = int(name.split(".")[1]) if name.startswith("blk.") else None
            qtype = gguf.GGMLQuantizationType[AMX_TYPES[layer] if layer is not None else "Q8_0"]
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            rows = int(np.prod(shape[:-1]))
            writer.add_tensor(name, np.zeros((rows, shape[-1] // block * size), dtype=np.uint8), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def _illegal_instruction() -> None:
    """Execute ``ud2`` (x86) or an undefined word (arm64): a real SIGILL, for the tests' fault hook."""
    import mmap

    code = b"\x0f\x0b" if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") else \
        b"\x00\x00\x00\x00"
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    ctypes.CFUNCTYPE(None)(address)()


def probe_decode(work: Path) -> None:
    """Load the probe model with the extra buffer types on and decode a prompt, then two tokens."""
    from . import llama

    model = llama.LlamaModel(write_probe_model(work / "probe.gguf"))
    context = llama.LlamaContext(model, n_seq_max=1, n_ctx=64, n_batch=64, n_ubatch=64, threads=2,
                                 flash_attn="off", kv_type="f16", kv_unified=False, n_outputs_max=1)
    batch = llama.LlamaBatch(PROMPT_TOKENS)
    if os.environ.get(FAULT_ENV) == "sigill":
        _illegal_instruction()
    steps = [list(range(1, PROMPT_TOKENS + 1)), [PROMPT_TOKENS + 1], [PROMPT_TOKENS + 2]]
    position = 0
    for tokens in steps:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.seq_id[i][0] = token, position + i, 0
            batch.logits[i] = i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        if context.decode(batch) != 0:
            raise SystemExit(f"probe decode failed{llama.last_error()}")
        position += len(tokens)
    batch.close()
    context.close()
    model.close()


if __name__ == "__main__":
    probe_decode(Path(sys.argv[1]))
