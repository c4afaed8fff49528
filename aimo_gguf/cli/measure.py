"""The commands that measure and compare: bench, compare and report."""

from __future__ import annotations

import json

import click

from ..bench.results import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROBLEMS,
    DEFAULT_SAMPLES,
)
from ..compare import DEFAULT_CTX as COMPARE_CTX
from ..engine.api import SAMPLER_AUTO
from .base import cli
from .options import (
    OUTPUT_FILE,
    check_batch_option,
    config_options,
    json_option,
    quiet_option,
)

PLOT_HELP = "Also draw {what} to this PNG (needs matplotlib)."


@cli.command("bench")
@config_options(only=("model", "n_gpu_layers", "threads", "ctx", "max_memory", "kv_type", "flash_attn", "split_mode",
                      "tensor_split", "main_gpu", "temperature", "top_k", "top_p", "min_p", "vote"))
@click.option("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), show_default=True,
              help="Batch sizes to measure the engine at, comma-separated; 'auto' is the largest that fits "
                   "--max-memory, as in run.")
@click.option("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, show_default=True,
              help="Tokens generated per sample (EOS is suppressed: every sample generates exactly this many).")
@click.option("--problems", type=int, default=DEFAULT_PROBLEMS, show_default=True,
              help="Synthetic problems ('What is 3 times 7?'), rendered with the model's chat template.")
@click.option("--samples", type=int, default=DEFAULT_SAMPLES, show_default=True, help="Samples per problem.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Measure the one-at-a-time create_completion loop too.")
@click.option("--confidence", is_flag=True,
              help="Also measure each batch size with per-token confidence on (what --vote entropy and the "
                   "others need): off, on, on, off, the faster of each kept, and the ratio shown.")
@click.option("--samplers", default=SAMPLER_AUTO, show_default=True,
              help="Where the engine draws tokens (see run --sampler), comma-separated: each is measured at every "
                   "batch size, alternating (batched,chain compares the batched sampler with llama.cpp's chains).")
@json_option
@click.option("--json-file", type=OUTPUT_FILE,
              help="Also write every row, the settings and the machine as JSON to this file.")
@click.option("--plot", type=OUTPUT_FILE, help=PLOT_HELP.format(what="generated tokens/s and RSS against batch size"))
@click.option("--stress", type=click.IntRange(min=2), default=None,
              help="Then run this many synthetic problems through the full run pipeline and report RSS along it.")
@click.option("--time-limit", type=click.FloatRange(min=1), default=None,
              help="With --stress: project the time for that many problems x --samples x --max-tokens "
                   "from the best row and compare it with this limit in seconds.")
@quiet_option("No progress lines on stderr.")
def bench_command(as_json, stress, time_limit, quiet, **options) -> None:
    """Measure speed and memory of the engine at several batch sizes against a create_completion loop.

    Every row does the same work: --problems synthetic problems x --samples
    samples x exactly --max-tokens tokens. Prints a table on stdout (JSON with
    --json) and progress on stderr. Host ms/seq-step is everything in a
    generation step but llama_decode, per sequence, split into drawing the
    tokens, the confidence signals and the rest.

    \b
    Examples:
      aimo-gguf bench --batch-sizes 1,4,16 --max-tokens 64
      aimo-gguf bench -m models/qwen2.5-math-7b-Q4_K_M.gguf -ngl -1 \\
          --batch-sizes 8,16,32 --max-tokens 512 --json-file bench.json --plot bench.png
      aimo-gguf bench -m host201k.gguf --no-baseline --batch-sizes 1,8,32 --samplers batched,chain \\
          --temperature 1 --top-k 0 --top-p 1 --min-p 0.02 --vote entropy
    """
    from .. import bench as bench_module
    from ..bench.stress import stress_and_project

    json_file, plot = options.pop("json_file"), options.pop("plot")
    bench_module.check_request(model=options["model"], batch_sizes=options["batch_sizes"],
                               samplers=options["samplers"], json_file=json_file, plot=plot)
    result = bench_module.bench(progress=not quiet, **options)
    if not as_json:
        click.echo(result.table())
    if json_file is not None:
        result.write_json(json_file)
    if plot is not None:
        bench_module.plot(result, plot)
    written = [p for p in (json_file, plot) if p is not None]
    if written and not quiet:
        click.echo(f"wrote {' and '.join(written)}", err=True)
    data = result.to_dict()
    try:
        result.check_measured()  # the table and files show the errors; the exit code says none measured
        if stress is not None:
            report = stress_and_project(result, problems=stress, time_limit=time_limit, progress=not quiet,
                                        model=options["model"], n_gpu_layers=options["n_gpu_layers"],
                                        threads=options["threads"])
            data["stress"] = report.to_dict()
            if not as_json:
                click.echo()
                click.echo(report.text())
    finally:
        if as_json:
            click.echo(json.dumps(data, indent=2))


@cli.command("compare")
@click.argument("reference", metavar="MODEL_REF", type=click.Path(dir_okay=False))
@click.argument("quantized", metavar="MODEL_Q", type=click.Path(dir_okay=False))
@click.option("--text", type=click.Path(dir_okay=False),
              help="UTF-8 text to compare next-token predictions over [default: a bundled math text].")
@click.option("--problems", type=click.Path(dir_okay=False),
              help="Also solve this problem set with both models: accuracy and speed.")
@click.option("--ctx", default=COMPARE_CTX, show_default=True, type=click.IntRange(min=16),
              help="Tokens per chunk of the text.")
@click.option("--max-text-tokens", type=click.IntRange(min=2), default=None, help="Compare on the first N tokens only.")
@config_options(only=("n_gpu_layers", "threads", "samples", "max_tokens", "seed"))
@check_batch_option("Sequences decoded together on the problem set.")
@json_option
@quiet_option()
def compare_command(reference, quantized, as_json, quiet, **options) -> None:
    """How much does quantization change a model? Compare MODEL_Q with MODEL_REF.

    Reports next-token top-1 agreement, KL divergence and perplexity over a
    text and, with --problems, both models' accuracy and speed.

    \b
    Example:
      aimo-gguf compare models/m-F16.gguf models/m-Q4_K_M.gguf --problems data/val.csv -n 1
    """
    from ..compare import compare

    result = compare(reference, quantized, progress=not quiet, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())


@cli.command("report")
@click.argument("summaries", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--plot", "plot_path", type=OUTPUT_FILE,
              help=PLOT_HELP.format(what="accuracy against k and against generated tokens per problem"))
def report_command(summaries, plot_path) -> None:
    """Compare graded runs: pass@1, the voted accuracy, every vote mode's, pass@n and tokens; pass@k,
    maj@k and the run's vote @k; the samples that ended at the token limit, apart.

    SUMMARIES are --summary JSON files of runs whose problems had an answer
    column. Every vote mode's accuracy, and every k's, comes from the same
    samples, so one run compares them without rerunning the model.

    \b
    Examples:
      aimo-gguf run val.csv -n 8 --vote entropy --summary s.json && aimo-gguf report s.json
      aimo-gguf report smollm2.json gemma.json --plot modes.png
    """
    from ..report import check_plot, plot, read_report, render

    reports = [read_report(path) for path in summaries]
    if plot_path is not None:
        check_plot(plot_path, summaries=summaries)
    click.echo(render(reports))
    if plot_path is not None:
        plot(reports, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
