"""``aimo-gguf convert``: a Hugging Face model to checked, quantized GGUF files.

Steps, each of which fails with one line rather than a traceback:

1. resolve SOURCE: a local model folder, or a Hub repo id downloaded with
   ``huggingface-hub`` (its cache, ``--revision``, ``HF_TOKEN``);
2. check it before any heavy work: ``config.json``, an architecture that this
   llama.cpp converts, a tokenizer, known quantization types, disk space;
3. convert to F16/BF16 with llama.cpp's own ``convert_hf_to_gguf.py`` from the
   llama.cpp that the installed llama-cpp-python was built from (its sdist
   carries it: fetched once with pip into a cache), or from ``LLAMA_CPP_DIR``;
4. quantize each requested type through the binding (``llama_model_quantize``),
   with an optional importance matrix;
5. smoke-test every output (load it, generate a few tokens);
6. move the outputs into place and write a manifest (source, revision,
   converter, types, sizes, sha256, smoke-test output).

Everything is written in a staging folder inside the output folder and
renamed into place only after its smoke test passed, so an interrupted or
failed conversion leaves no half-written model behind.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import AimoError, InputError, ModelError
from .gguf.converter import (
    CONVERTER,
    find_converter,
    run_converter,
    supported_architectures,
)
from .outputs import refuse_special, replace_file
from .pipeline.problems import write_json_atomic

OUTTYPES = ("f16", "bf16", "f32")
CONVERT_REQUIREMENTS = ("torch", "transformers", "sentencepiece", "safetensors", "numpy")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "tokenizer.tiktoken")
HUB_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.py", "*.jinja", "LICENSE*")
# Bits per weight of common types, to estimate the disk a conversion needs (a
# little above llama.cpp's figures, which leaves a margin).
BITS_PER_WEIGHT = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.6, "Q5_K_M": 5.7, "Q5_K_S": 5.6,
                   "Q5_0": 5.5, "Q5_1": 6.0, "Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q4_0": 4.5, "Q4_1": 5.0,
                   "Q3_K_L": 4.3, "Q3_K_M": 3.9, "Q3_K_S": 3.5, "Q2_K": 3.4,
                   "MXFP4_MOE": 4.6}
SMOKE_PROMPT = "The capital of France is"
SMOKE_TOKENS = 8
MANIFEST_FORMAT = 1
STAGING_PREFIX = ".convert-"  # + pid + random: a killed conversion's folder is removed by the next one


@dataclass
class ConvertedFile:
    """One GGUF file the conversion produced."""

    type: str  # F16, Q4_K_M, ...
    file: str  # name inside the output folder
    bytes: int
    sha256: str
    smoke_test: dict | None = None  # {"text": ..., "seconds": ...}; None with --no-smoke-test


@dataclass
class ConvertResult:
    source: str
    revision: str | None
    name: str
    outdir: Path
    manifest: Path
    files: list[ConvertedFile] = field(default_factory=list)

    def paths(self) -> list[Path]:
        return [self.outdir / f.file for f in self.files]


def convert(
    source: str | Path,
    *,
    quant: tuple[str, ...] | list[str] | str = ("Q4_K_M",),
    outtype: str = "f16",
    outdir: str | Path = "models",
    name: str | None = None,
    revision: str | None = None,
    imatrix: str | Path | None = None,
    threads: int | None = None,
    llama_cpp_dir: str | Path | None = None,
    smoke_test: bool = True,
    force: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert ``source`` (a model folder or a Hub repo id) to ``outtype`` and each type in
    ``quant``; return the files and the manifest written in ``outdir``."""
    from .engine.limits import check_threads
    from .gguf.imatrix import load_imatrix
    from .quantize import check_type

    check_threads(threads)
    say = _say if progress else (lambda message: None)
    types = _type_list(quant)
    for t in types:
        check_type(t)
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise InputError(f"--outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    base_type = outtype.upper()
    types = [t for t in types if t != base_type]
    matrix = load_imatrix(imatrix) if imatrix else None
    _check_imatrix_needs(types, matrix)
    _require_convert_extra()
    checked = _SourceCheck(llama_cpp_dir=llama_cpp_dir, progress=progress)
    model_dir, resolved_revision, kind = resolve_source(source, revision=revision, check=checked, progress=progress)
    name = name or _default_name(source, model_dir, kind)
    targets, manifest_path = _targets(Path(outdir), name, [base_type, *types], force=force)
    check_disk_space(model_dir, checked.config, Path(outdir), base_type, types)

    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=outdir))
    try:
        files = _stage(model_dir, checked, staging, targets, base_type=base_type, outtype=outtype, threads=threads,
                       matrix=matrix, smoke_test=smoke_test, say=say)
        for t, path in targets.items():
            replace_file(staging / path.name, path, "the conversion")
        result = ConvertResult(str(source), resolved_revision, name, Path(outdir), manifest_path, files)
        manifest = _manifest(result, kind=kind, architecture=checked.architecture, converter=checked.converter,
                             outtype=base_type, matrix=matrix)
        write_json_atomic(manifest_path, manifest)
        return result
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ModelError(f"the disk of {outdir} is full: free space and run again") from None
        raise ModelError(f"writing into {outdir} failed: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class _SourceCheck:
    """``resolve_source``'s check of a model folder, run before a Hub repo's weights download; keeps what
    it found for the conversion."""

    llama_cpp_dir: str | Path | None
    progress: bool
    config: dict = field(default_factory=dict)
    converter: Path = Path()
    architecture: str = ""

    def __call__(self, folder: Path) -> None:
        self.config = read_config(folder)
        check_tokenizer(folder)
        self.converter = find_converter(self.llama_cpp_dir, progress=self.progress)
        self.architecture = check_architecture(self.config, folder, self.converter)


def _targets(outdir: Path, name: str, types: list[str], *, force: bool) -> tuple[dict[str, Path], Path]:
    """Each type's GGUF path and the manifest's, checked (a usable name, nothing special, nothing there
    unless ``force``), with ``outdir`` made and cleared of killed conversions' staging folders."""
    if not re.fullmatch(r"[\w.+-]+", name):
        raise InputError(f"--name {name!r}: use letters, digits, '.', '_', '+' and '-' only")
    targets = {t: outdir / f"{name}-{t}.gguf" for t in types}
    manifest_path = outdir / f"{name}.manifest.json"
    for path in [*targets.values(), manifest_path]:
        refuse_special(path, "the conversion")  # a folder, FIFO or device is refused before "already exists"
    if not force:
        taken = [p for p in [*targets.values(), manifest_path] if p.exists()]
        if taken:
            raise InputError(f"{taken[0]} already exists: pass --force to replace, or choose another --name")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {outdir}: {e.strerror or e}") from None
    remove_stale_staging(outdir)
    return targets, manifest_path


def _stage(model_dir: Path, checked: _SourceCheck, staging: Path, targets: dict[str, Path], *, base_type: str,
           outtype: str, threads, matrix, smoke_test: bool, say) -> list[ConvertedFile]:
    """Convert, quantize, smoke-test and hash every output inside ``staging``."""
    staged: dict[str, Path] = {}
    base = staging / targets[base_type].name
    say(f"converting {model_dir} ({checked.architecture}) to {base_type} with {checked.converter / CONVERTER}...")
    t0 = time.perf_counter()
    run_converter(checked.converter, model_dir, base, outtype)
    say(f"{base_type} written in {time.perf_counter() - t0:.1f} s ({_mib(base.stat().st_size)})")
    staged[base_type] = base
    for t in targets:
        if t != base_type:
            staged[t] = _quantize_step(base, staging / targets[t].name, t, threads, matrix, say)
    files = []
    for t, path in staged.items():
        smoke = _smoke(path, threads, say) if smoke_test else None
        say(f"hashing {path.name}...")
        files.append(ConvertedFile(t, targets[t].name, path.stat().st_size, sha256_file(path), smoke))
    return files


def remove_stale_staging(outdir: Path) -> list[Path]:
    """Remove staging folders of conversions that were killed (their process is gone)."""
    import psutil

    removed = []
    for folder in outdir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-")[0]
        if folder.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# --- the source ----------------------------------------------------------------


def resolve_source(source: str | Path, *, revision: str | None = None, check=None,
                   progress: bool = True) -> tuple[Path, str | None, str]:
    """(model folder, revision, "local" or "hub") for a folder or a Hub repo id.

    ``check(folder)`` runs once config and tokenizer files are there and
    before the weights of a Hub repo are downloaded.
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{source} is a file: SOURCE is a model folder or a Hub repo id")
        if revision:
            raise InputError("--revision applies to Hub repo ids, not to a local folder")
        if check:
            check(path)
        return path, None, "local"
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) or str(source).startswith((".", "/", "~")):
        raise InputError(f"{source}: no such folder (and not a Hub repo id like owner/name)")
    from huggingface_hub import snapshot_download

    from .pull import hub_errors

    where = f"{source}" + (f"@{revision}" if revision else "")
    if progress:
        _say(f"fetching {where} into the Hugging Face cache...")
    with hub_errors(str(source), revision, where):
        if check:
            small = [p for p in HUB_PATTERNS if "safetensors" not in p]
            check(Path(snapshot_download(repo_id=str(source), revision=revision, allow_patterns=small)))
        folder = Path(snapshot_download(repo_id=str(source), revision=revision, allow_patterns=list(HUB_PATTERNS)))
    # The cache keeps snapshots under snapshots/<commit>: that is the revision converted.
    return folder, folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else revision, "hub"


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise InputError(f"{model_dir} has no config.json: is it a Hugging Face model folder?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} is not a JSON object")
    return config


def check_architecture(config: dict, model_dir: Path, converter: Path) -> str:
    from .engine.backends import binding_version

    names = config.get("architectures") or []
    if not names:
        raise InputError(f"{model_dir}/config.json names no architectures: llama.cpp cannot tell how to convert it")
    supported = supported_architectures(converter)
    for name in names:
        if name in supported:
            return name
    raise InputError(f"architecture {', '.join(names)} is not supported by this llama.cpp's converter "
                     f"(llama-cpp-python {binding_version()}): see `{CONVERTER} --print-supported-models`")


def check_tokenizer(model_dir: Path) -> None:
    if not any((model_dir / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"{model_dir} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
                         f"copy the tokenizer files of the base model into it")


def check_disk_space(model_dir: Path, config: dict, outdir: Path, base_type: str, types: list[str]) -> None:
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) or \
        sum(p.stat().st_size for p in model_dir.glob("*.bin"))
    if not weights:
        raise InputError(f"{model_dir} has no weights (*.safetensors or *.bin)")
    source_bits = 32 if str(config.get("torch_dtype") or config.get("dtype")) == "float32" else 16
    params = weights * 8 / source_bits
    need = sum(params * BITS_PER_WEIGHT.get(t, 8.5) / 8 for t in [base_type, *types])
    free = shutil.disk_usage(outdir).free
    if free < need:
        raise InputError(f"not enough disk space in {outdir}: the outputs need about {_mib(need)}, "
                         f"{_mib(free)} free")


def _default_name(source: str | Path, model_dir: Path, kind: str) -> str:
    """The folder's name, or the repo's name (a Hub snapshot folder is named by its commit)."""
    name = model_dir.resolve().name if kind == "local" else str(source).rstrip("/").split("/")[-1]
    return re.sub(r"[^\w.+-]", "-", name)


def _require_convert_extra() -> None:
    missing = [m for m in CONVERT_REQUIREMENTS if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"conversion needs {', '.join(missing)}: pip install 'aimo-gguf[convert]' "
                         f"(with --extra-index-url https://download.pytorch.org/whl/cpu for a CPU torch)")


# --- steps -----------------------------------------------------------------------


def _type_list(quant) -> list[str]:
    items = quant.split(",") if isinstance(quant, str) else list(quant)
    out = []
    for item in items:
        t = item.strip().upper()
        if t and t not in out:
            out.append(t)
    return out


def _check_imatrix_needs(types: list[str], matrix) -> None:
    from .quantize import NEEDS_IMATRIX

    needy = [t for t in types if t in NEEDS_IMATRIX]
    if needy and matrix is None:
        raise InputError(f"{needy[0]} needs an importance matrix: pass --imatrix FILE (from llama-imatrix)")


def _quantize_step(base: Path, out: Path, type_: str, threads, matrix, say) -> Path:
    from .quantize import quantize

    say(f"quantizing to {type_}...")
    t0 = time.perf_counter()
    try:
        quantize(base, out, type=type_, threads=threads, imatrix=matrix, force=True, progress=False)
    except ModelError:
        if shutil.disk_usage(out.parent).free < 64 * 2**20:
            raise OSError(errno.ENOSPC, "no space left") from None  # reported as a full disk
        raise
    say(f"{type_} written in {time.perf_counter() - t0:.1f} s ({_mib(out.stat().st_size)})")
    return out


def _smoke(path: Path, threads, say) -> dict:
    """Load ``path`` and generate a few greedy tokens; a ModelError if it cannot."""
    from .engine import Engine, Request, SamplingParams

    say(f"smoke test: loading {path.name} and generating {SMOKE_TOKENS} tokens...")
    t0 = time.perf_counter()
    try:
        with Engine(path, ctx=64, batch_size=1, threads=threads, token_budget=64) as engine:
            prompt = engine.tokenize(SMOKE_PROMPT)
            request = Request("smoke", prompt, SMOKE_TOKENS, 0, SamplingParams(temperature=0.0))
            done = list(engine.generate([request]))
    except AimoError as e:
        raise ModelError(f"smoke test of {path.name} failed: {e}") from None
    if not done or not done[0].tokens:
        raise ModelError(f"smoke test of {path.name} failed: it generated no token")
    return {"prompt": SMOKE_PROMPT, "text": done[0].text, "tokens": len(done[0].tokens),
            "seconds": round(time.perf_counter() - t0, 3)}


# --- manifest --------------------------------------------------------------------


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _manifest(result: ConvertResult, *, kind, architecture, converter: Path, outtype, matrix) -> dict:
    from .engine.backends import binding_version

    return {
        "format": MANIFEST_FORMAT,
        "name": result.name,
        "source": result.source,
        "source_kind": kind,
        "revision": result.revision,
        "architecture": architecture,
        "converter": {
            "script": CONVERTER,
            "llama_cpp_python": binding_version(),
            "llama_cpp_dir": str(converter),
            "sha256": sha256_file(converter / CONVERTER),
        },
        "outtype": outtype,
        "types": [f.type for f in result.files],
        "imatrix": None if matrix is None else {
            "file": str(matrix.path), "sha256": sha256_file(matrix.path), "entries": len(matrix),
            "datasets": matrix.datasets, "chunks": matrix.chunks,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [asdict(f) for f in result.files],
    }


def _say(message: str) -> None:
    print(f"aimo-gguf: {message}", file=sys.stderr, flush=True)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"
