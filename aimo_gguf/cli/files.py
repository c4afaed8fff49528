"""The commands about model files: info, models, pull, convert, quantize, split and synth."""

from __future__ import annotations

import json

import click

from ..convert import OUTTYPES
from ..synth import PEAKED_LOGIT_STD
from .base import cli
from .options import (
    OUTPUT_FILE,
    MemorySize,
    check_batch_option,
    config_options,
    force_option,
    json_option,
    quiet_option,
)


@cli.command("info")
@click.argument("model_path", metavar="MODEL", required=False, type=click.Path(dir_okay=False))
@config_options(only=("n_gpu_layers", "ctx", "max_tokens", "batch_size", "max_memory", "kv_type", "split_mode",
                      "tensor_split", "main_gpu"))
@click.option("--gpus", "gpus", default=None,
              help="GPU memory sizes to split the estimate over, e.g. 15GB,15GB or 2x15GB [default: the GPUs NVML "
                   "sees, when there are several].")
@json_option
def info_command(model_path, as_json, **options) -> None:
    """Describe a GGUF MODEL and estimate the memory of a configuration, from its header alone.

    Without MODEL it describes the embedded SmolLM2-135M-Instruct Q4_1.

    \b
    Examples:
      aimo-gguf info models/qwen2.5-math-7b-Q4_K_M.gguf --ctx 4096 -b 16 -ngl 20
      aimo-gguf info models/qwen2.5-math-7b-Q4_K_M.gguf -b auto --max-memory 15GiB -ngl -1
    """
    from ..info import describe

    result = describe(model_path, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())


@cli.command("models")
@click.option("--ctx", default=8192, show_default=True, type=click.IntRange(min=64),
              help="Context of one sequence (capped at each model's trained context).")
@check_batch_option("Sequences decoded together.")
@config_options(only=("kv_type",))
@click.option("--gpu", "gpus", default="16GB,80GB,2x15GB,4x22GB", show_default=True, type=MemorySize(devices=True),
              help="Comma-separated GPU memory sizes to fit (16GB = Kaggle T4/P100, 80GB = H100); NxSIZE is N "
                   "GPUs of that size with the model split by layer (2x15GB = Kaggle's 2 x T4, 4x22GB = 4 x L4).")
@click.option("--pull", "show_pull", is_flag=True, help="Also print the aimo-gguf pull command of each model.")
@json_option
def models_command(ctx, batch_size, kv_type, gpus, show_pull, as_json) -> None:
    """Recommended models (models/registry.json) and the --n-gpu-layers that fits each GPU.

    The fit is arithmetic on the listed sizes (weights + KV cache + a 1 GiB
    reserve and the compute buffer), not a measurement: check with
    aimo-gguf bench on the GPU.

    \b
    Example:
      aimo-gguf models --ctx 16384 -b 16 --kv-type q8_0 --gpu 15GiB,80GB
    """
    from ..models import fits_json, fits_table, load_registry

    sizes = [g.strip() for g in gpus.split(",") if g.strip()]
    entries = load_registry()
    if as_json:
        click.echo(json.dumps(fits_json(entries, sizes, ctx=ctx, batch_size=batch_size, kv_type=kv_type), indent=2))
        return
    click.echo(f"{batch_size} sequences x up to {ctx} tokens, KV {kv_type}:")
    click.echo(fits_table(entries, sizes, ctx=ctx, batch_size=batch_size, kv_type=kv_type))
    if show_pull:
        click.echo()
        for e in entries:
            for command in e.pull_commands():
                click.echo(command)


@cli.command("pull")
@click.argument("repo")
@click.argument("filename")
@click.option("--revision", default=None, help="Branch, tag or commit of the repo [default: main].")
@click.option("--models-dir", default="models", show_default=True, type=click.Path(file_okay=False),
              help="Folder to put the file in.")
@force_option("the file")
def pull_command(repo, filename, **options) -> None:
    """Download FILENAME (a .gguf) of Hugging Face Hub repo REPO into the models folder.

    Uses the Hugging Face cache and its variables (HF_HOME, HF_TOKEN,
    HF_HUB_OFFLINE); prints the path of the model file.

    \b
    Example:
      aimo-gguf pull bartowski/Qwen2.5-Math-7B-Instruct-GGUF Qwen2.5-Math-7B-Instruct-Q4_K_M.gguf
    """
    from ..pull import pull

    click.echo(pull(repo, filename, **options))


@cli.command("convert")
@click.argument("source")
@click.option("--quant", default="Q4_K_M", show_default=True,
              help="Comma-separated llama.cpp file types to quantize to ('' for none).")
@click.option("--outtype", type=click.Choice(OUTTYPES), default="f16", show_default=True,
              help="Type of the converted reference file, which the quantizations start from.")
@click.option("--outdir", default="models", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the GGUF files and the manifest.")
@click.option("--name", default=None, help="Base of the file names [default: the folder's or repo's name].")
@click.option("--revision", default=None, help="Branch, tag or commit of a Hub repo [default: main].")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="Importance matrix for the quantizations.")
@config_options(only=("threads",))
@click.option("--llama-cpp-dir", envvar="LLAMA_CPP_DIR", type=click.Path(file_okay=False),
              help="llama.cpp checkout whose convert_hf_to_gguf.py to use (env LLAMA_CPP_DIR) "
                   "[default: the one of the installed llama-cpp-python].")
@click.option("--smoke-test/--no-smoke-test", default=True, show_default=True,
              help="Load every output and generate a few tokens before publishing it.")
@force_option("outputs")
@quiet_option()
def convert_command(source, quiet, **options) -> None:
    """Convert a Hugging Face model (a local folder or a Hub repo id) to GGUF and quantize it.

    Writes NAME-F16.gguf (or BF16), NAME-TYPE.gguf for each --quant type and
    NAME.manifest.json (source, revision, converter, sizes, sha256, smoke
    test) into --outdir; prints the paths. Needs the convert extra:
    pip install 'aimo-gguf[convert]'.

    \b
    Examples:
      aimo-gguf convert Qwen/Qwen2.5-Math-1.5B-Instruct --quant Q4_K_M,Q8_0
      aimo-gguf convert ./my-finetune --outtype bf16 --quant Q5_K_M --outdir models/
    """
    from ..convert import convert

    result = convert(source, progress=not quiet, **options)
    for path in [*result.paths(), result.manifest]:
        click.echo(path)


@cli.command("quantize")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=OUTPUT_FILE)
@click.option("--type", "type", required=True, help="llama.cpp file type: Q4_K_M, Q5_K_M, Q8_0, F16, ...")
@config_options(only=("threads",))
@click.option("--imatrix", type=click.Path(dir_okay=False),
              help="Importance matrix from llama-imatrix (GGUF or legacy .dat); needed by IQ1/IQ2 and Q2_K_S.")
@click.option("--allow-requantize", is_flag=True,
              help="Accept an already quantized input (loses quality: quantize from F16/BF16 when you can).")
@force_option("OUT")
def quantize_command(src, dst, **options) -> None:
    """Quantize the GGUF model IN into OUT through llama-cpp-python (no llama.cpp build needed).

    \b
    Example:
      aimo-gguf quantize models/qwen2.5-math-7b-F16.gguf models/qwen2.5-math-7b-Q4_K_M.gguf --type Q4_K_M
    """
    from ..quantize import quantize

    click.echo(quantize(src, dst, **options))


@cli.command("split")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=OUTPUT_FILE)
@click.option("--max-tensors", type=click.IntRange(min=1), default=None, help="Most tensors per part.")
@click.option("--max-size", default=None, type=MemorySize(),
              help="Most tensor bytes per part, e.g. 45GB (a Hub file holds 50 GB).")
@force_option("parts")
@quiet_option()
def split_command(src, dst, max_tensors, max_size, force, quiet) -> None:
    """Write the GGUF model IN as a split model OUT-00001-of-0000N.gguf, ... (llama.cpp's gguf-split format).

    Every command takes the split model by its first part; prints the parts' paths.

    \b
    Example:
      aimo-gguf split models/big.gguf models/big.gguf --max-size 45GB
    """
    from ..fit.memory import parse_size
    from ..gguf.parts import split_gguf

    size = 0 if max_size is None else parse_size(max_size)
    for part in split_gguf(src, dst, max_tensors=max_tensors or 0, max_size=size, force=force, progress=not quiet):
        click.echo(part)


@cli.command("synth")
@click.option("--like",
              help="A model of the registry or another known shape (see aimo-gguf synth --list), "
                   "or a Hugging Face config.json (or the folder holding it).")
@click.option("-o", "--output", type=OUTPUT_FILE, help="The GGUF file to write.")
@click.option("--type", "type", default=None,
              help="llama.cpp file type of the result [default: Q4_K_M; MXFP4_MOE for gpt-oss].")
@config_options(only=("threads",))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@force_option("OUTPUT")
@click.option("--dry-run", is_flag=True, help="Print the shapes, parameters and sizes; write nothing.")
@click.option("--tokenizer", type=click.Path(dir_okay=False),
              help="A GGUF whose BPE tokenizer the file gets, padded to the real vocabulary "
                   "[default: the embedded SmolLM2's].")
@click.option("--logit-std", type=float, default=None,
              help=f"Spread the logits this much (standard deviation): {PEAKED_LOGIT_STD:g} gives distributions "
                   "peaked like a trained model's (SmolLM2's on math text) [default: near-uniform, as random "
                   "weights give].")
@click.option("--list", "list_shapes", is_flag=True, help="List the shapes --like knows by name.")
@quiet_option()
def synth_command(like, output, dry_run, list_shapes, quiet, **options) -> None:
    """Write a GGUF with random weights and the exact shapes of a real model.

    Speed and memory depend on shapes and types, not weight values: the file
    measures what the real model costs (aimo-gguf bench, info) without a
    download. Its metadata marks it synthetic; run says so when it is used.

    \b
    Examples:
      aimo-gguf synth --like Qwen2.5-Math-7B-Instruct -o models/synth-qwen7b.gguf
      aimo-gguf synth --like gpt-oss-20b -o models/synth-gpt-oss-20b.gguf
      aimo-gguf synth --like ./my-model/config.json -o m.gguf --type Q8_0
      aimo-gguf synth --like host-gpt-oss-201k --logit-std 8 -o host201k.gguf
    """
    from ..synth import describe, known_shapes, spec_like, synth

    if list_shapes:
        for name in known_shapes():
            click.echo(name)
        return
    if like is None:
        raise click.UsageError("Missing option '--like'.")
    spec = spec_like(like)
    if dry_run:
        click.echo(json.dumps(describe(spec, options["type"]), indent=2))
        return
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output'.")
    click.echo(synth(like, output, progress=not quiet, **options))
