"""The ``aimo-gguf`` command line: a thin layer over the library.

Commands parse options, call the library and render its results. Options of
``run`` come from ``RunConfig`` (one declaration each); library errors become
one line on stderr and an exit code.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import typing
from dataclasses import MISSING

import click

from . import __version__
from .config import ENV_PREFIX, RunConfig, option_fields
from .errors import AimoError
from .synth import PEAKED_LOGIT_STD

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SHORT_FLAGS = {"model": "-m", "n_gpu_layers": "-ngl", "batch_size": "-b", "samples": "-n", "threads": "-t"}


class OneLineUsageError(click.UsageError):
    """A usage error (bad flag, bad value, missing argument) shown as one ``Error:`` line."""

    def show(self, file=None) -> None:
        message = self.format_message().rstrip()
        if self.ctx is not None:
            message += ("" if message.endswith((".", "!", "?")) else ".") + f" Try '{self.ctx.command_path} -h'."
        click.echo(f"Error: {message}", err=True)


def _one_line(error: click.UsageError) -> click.UsageError:
    if isinstance(error, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return error
    message = _name_variables(" ".join(error.format_message().split()), error.ctx, getattr(error, "param", None))
    one = OneLineUsageError(message, error.ctx)
    one.exit_code = error.exit_code
    return one


def _name_variables(message: str, ctx: click.Context | None, param: click.Parameter | None = None) -> str:
    """``message`` about a value that came from the environment (AIMO_GGUF_SAMPLES=x) names the variable:
    the user never typed the flag the message names. The value's option is ``param`` when click knows it;
    otherwise each option from the environment whose flag or value the message mentions."""
    if ctx is None:
        return message
    named = []
    for p in ctx.command.params if param is None else [param]:
        if not p.envvar or ctx.get_parameter_source(p.name) is not click.core.ParameterSource.ENVIRONMENT:
            continue
        var = p.envvar if isinstance(p.envvar, str) else next((v for v in p.envvar if v in os.environ), "")
        value = os.environ.get(var, "")
        flags = [o for o in p.opts if o.startswith("--")]
        mentioned = any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", message) for f in flags)
        if param is not None or mentioned or (len(value.strip()) >= 3 and value.strip() in message):
            named.append(f"{var}={shlex.quote(value)}")
    if not named:
        return message
    end = len(message.rstrip(".")) if message.endswith(".") else len(message)
    return f"{message[:end]} (from the environment: {', '.join(named)}){message[end:]}"


class _OneLineUsage:
    """Click's usage errors (a bad value, a missing argument, an unknown flag) as one line."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            raise _one_line(e) from None


class AimoCommand(_OneLineUsage, click.Command):
    """Turns library errors and click's usage errors into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AimoError as e:
            click.echo(f"Error: {_name_variables(str(e), ctx)}", err=True)
            ctx.exit(e.exit_code)
        except click.UsageError as e:
            raise _one_line(e) from None


class AimoGroup(_OneLineUsage, click.Group):
    """The command group: an unknown command is one line too."""

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            raise _one_line(e) from None


class BatchSize(click.ParamType):
    """A positive integer or 'auto'."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


class OutputFile(click.Path):
    """The path of a file a command writes: an empty one, or one ending in '/' (a folder), is a usage error
    (``outputs.check_file_name``), as an existing folder is."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        from .outputs import check_file_name

        try:
            check_file_name(value, "a file")
        except AimoError as e:
            self.fail(str(e), param, ctx)
        return super().convert(value, param, ctx)


OUTPUT_FILE = OutputFile()


def _click_type(f):
    if f.metadata.get("accepts_auto"):
        return BatchSize()
    hint = typing.get_type_hints(RunConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if typing.get_origin(base) is tuple:
        return str
    if "choices" in f.metadata:
        return click.Choice(f.metadata["choices"])
    return base


def config_options(command=None, *, only: tuple[str, ...] | None = None):
    """Add one option per RunConfig field (or the fields named in ``only``), with its default,
    help and AIMO_GGUF_* variable."""
    if command is None:
        return lambda fn: config_options(fn, only=only)
    for f in reversed(option_fields()):
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        decls = [flag] + ([SHORT_FLAGS[f.name]] if f.name in SHORT_FLAGS else [])
        kind = _click_type(f)
        kwargs = dict(
            help=f.metadata["help"],
            envvar=ENV_PREFIX + f.name.upper(),
            show_envvar=False,
        )
        if kind is bool:
            # Every switch has its --no- form: a --recipe that turns one on can be turned off again.
            decls = [f"{flag}/--no-{flag[2:]}"]
            kwargs["default"] = f.default
        elif f.metadata.get("multiple"):
            kwargs.update(multiple=True, type=str)
        elif "flag_value" in f.metadata:  # --ray alone, or --ray ADDRESS
            kwargs.update(is_flag=False, flag_value=f.metadata["flag_value"], type=str, default=None,
                          metavar=f.metadata.get("metavar"))
        else:
            kwargs.update(type=kind, default=None if f.default is MISSING else f.default)
            # A help text that says its default itself ("[default: a quarter of --max-tokens]") gets no second one.
            kwargs["show_default"] = (f.default is not None and "[default:" not in f.metadata["help"]
                                      and f.name != "system_prompt")
        command = click.option(*decls, f.name, **kwargs)(command)
    return command


@click.group(cls=AimoGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="aimo-gguf")
def cli() -> None:
    """Solve olympiad math problems with quantized GGUF models through llama.cpp.

    The same command runs on a CPU build or a CUDA build of llama-cpp-python:
    --n-gpu-layers offloads what the GPU can hold and falls back to the CPU.
    """


@cli.command(cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("problems", required=False, type=click.Path(dir_okay=False))
@config_options
@click.option("-o", "--output", default="submission.csv", show_default=True, type=OUTPUT_FILE,
              help="Submission CSV to write (id,answer; input order).")
@click.option("--summary", "summary_path", type=OUTPUT_FILE,
              help="Also write the run's counters as JSON here.")
@click.option("--traces", type=OUTPUT_FILE,
              help="Stream every sample (text, extracted answer) to this JSONL file.")
@click.option("--journal", type=OUTPUT_FILE,
              help="Append each finished problem here, synced [default: OUTPUT's name + .journal.jsonl].")
@click.option("--resume", is_flag=True, help="Skip the problems the journal already holds (same settings only).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no results table.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log on stderr.")
def run(problems, output, summary_path, traces, journal, resume, quiet, verbose, **options) -> None:
    """Solve PROBLEMS (CSV, Parquet or JSONL with id, problem[, answer]).

    Without PROBLEMS it solves the sample problems shipped with aimo-gguf
    ('graded' names the bundled graded set: 320 problems in five levels, with
    answers); without --model it uses the embedded SmolLM2-135M-Instruct Q4_1.

    \b
    Examples:
      aimo-gguf run
      aimo-gguf run problems.csv -m models/qwen2.5-math-7b-Q4_K_M.gguf \\
          --n-gpu-layers 40 --samples 8 --batch-size 16 --max-tokens 2048 \\
          -o submission.csv --summary summary.json
      aimo-gguf run problems.csv --time-limit 3600 --early-stop-votes 3 --resume
      aimo-gguf run graded -n 8 --vote entropy --summary s.json && aimo-gguf report s.json
      aimo-gguf run problems.csv -m gpt-oss-20b.gguf --recipe aimo3-gpt-oss --tir -ngl -1
    """
    from .pipeline.runner import run as run_problems

    # Only the options given (on the command line or in AIMO_GGUF_*): a --recipe fills the others.
    ctx = click.get_current_context()
    defaults = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
    options = {k: v for k, v in options.items() if ctx.get_parameter_source(k) not in defaults}
    result = run_problems(
        problems,
        output=output,
        summary=summary_path,
        traces=traces,
        journal=journal,
        resume=resume,
        progress=not quiet,
        verbose=verbose,
        **options,
    )
    summary = result.summary
    if not quiet:
        if result.results:
            click.echo(_problem_table(result.results))
            click.echo()
        click.echo(summary.table())
        click.echo(f"wrote {output}" + (f" and {summary_path}" if summary_path else ""), err=True)
    if result.exit_code:
        sys.exit(result.exit_code)


def _problem_table(results) -> str:
    width = max(len(r.id) for r in results)
    lines = [f"{'id':<{width}}  {'answer':>7}  {'votes':>7}  note"]
    for r in results:
        if r.correct is None:
            mark = ""
        else:
            mark = "correct" if r.correct else "wrong"
        notes = [mark] + (["fallback"] if r.fallback else []) + (["too long"] if r.too_long else [])
        notes += ["early stop"] if r.early_stopped else []
        notes += ["cut by the time limit"] if r.cut else []
        lines.append(f"{r.id:<{width}}  {r.answer:>7}  {f'{r.votes}/{r.samples}':>7}  {', '.join(n for n in notes if n)}")
    return "\n".join(lines)


@cli.command("bench", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@config_options(only=("model", "n_gpu_layers", "threads", "ctx", "max_memory", "kv_type", "flash_attn", "split_mode",
                      "tensor_split", "main_gpu", "temperature", "top_k", "top_p", "min_p", "vote"))
@click.option("--batch-sizes", default="1,2,4,8,16,32", show_default=True,
              help="Batch sizes to measure the engine at, comma-separated; 'auto' is the largest that fits "
                   "--max-memory, as in run.")
@click.option("--max-tokens", type=int, default=128, show_default=True,
              help="Tokens generated per sample (EOS is suppressed: every sample generates exactly this many).")
@click.option("--problems", type=int, default=16, show_default=True,
              help="Synthetic problems ('What is 3 times 7?'), rendered with the model's chat template.")
@click.option("--samples", type=int, default=1, show_default=True, help="Samples per problem.")
@click.option("--no-baseline", is_flag=True, help="Skip the one-at-a-time create_completion loop.")
@click.option("--confidence", is_flag=True,
              help="Also measure each batch size with per-token confidence on (what --vote entropy and the "
                   "others need): off, on, on, off, the faster of each kept, and the ratio shown.")
@click.option("--samplers", default="auto", show_default=True,
              help="Where the engine draws tokens (see run --sampler), comma-separated: each is measured at every "
                   "batch size, alternating (batched,chain compares the batched sampler with llama.cpp's chains).")
@click.option("--json", "json_path", type=OUTPUT_FILE,
              help="Also write every row, the settings and the machine as JSON here.")
@click.option("--plot", "plot_path", type=OUTPUT_FILE,
              help="Also draw generated tokens/s and RSS against batch size to this PNG (needs matplotlib).")
@click.option("--stress", type=click.IntRange(min=2), default=None,
              help="Then run this many synthetic problems through the full run pipeline and report RSS along it.")
@click.option("--time-limit", type=click.FloatRange(min=1), default=None,
              help="With --stress: project the time for that many problems x --samples x --max-tokens "
                   "from the best row and compare it with this limit in seconds.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def bench_command(model, n_gpu_layers, threads, batch_sizes, max_memory, max_tokens, problems, samples, ctx, kv_type,
                  flash_attn, no_baseline, confidence, stress, time_limit, json_path, plot_path, quiet,
                  split_mode, tensor_split, main_gpu, temperature, top_k, top_p, min_p, vote, samplers) -> None:
    """Measure speed and memory of the engine at several batch sizes against a create_completion loop.

    Every row does the same work: --problems synthetic problems x --samples
    samples x exactly --max-tokens tokens. Prints a table on stdout and
    progress on stderr. Host ms/seq-step is everything in a generation step
    but llama_decode, per sequence, split into drawing the tokens, the
    confidence signals and the rest.

    \b
    Examples:
      aimo-gguf bench --batch-sizes 1,4,16 --max-tokens 64
      aimo-gguf bench -m models/qwen2.5-math-7b-Q4_K_M.gguf -ngl -1 \\
          --batch-sizes 8,16,32 --max-tokens 512 --json bench.json --plot bench.png
      aimo-gguf bench -m host201k.gguf --no-baseline --batch-sizes 1,8,32 --samplers batched,chain \\
          --temperature 1 --top-k 0 --top-p 1 --min-p 0.02 --vote entropy
    """
    from . import bench as bench_module
    from .gguf.files import resolve_model
    from .gguf.parts import model_paths
    from .outputs import check_distinct, check_writable

    if "auto" not in batch_sizes:
        bench_module.parse_batch_sizes(batch_sizes)  # fail before the model loads
    bench_module.parse_samplers(samplers)
    sizes = batch_sizes
    if plot_path is not None:
        bench_module.require_matplotlib()
    check_distinct({**model_paths(resolve_model(model)), "--json": json_path, "--plot": plot_path},
                   outputs={"--json", "--plot"})
    if plot_path is not None:
        check_writable(plot_path, "the plot")
    if json_path is not None:
        check_writable(json_path, "the JSON")
    result = bench_module.bench(
        model=model, n_gpu_layers=n_gpu_layers, threads=threads, batch_sizes=sizes, max_tokens=max_tokens,
        problems=problems, samples=samples, ctx=ctx, kv_type=kv_type, flash_attn=flash_attn, max_memory=max_memory,
        baseline=not no_baseline, confidence=confidence, progress=not quiet, split_mode=split_mode,
        tensor_split=tensor_split, main_gpu=main_gpu, temperature=temperature, top_k=top_k, top_p=top_p,
        min_p=min_p, vote=vote, samplers=samplers,
    )
    click.echo(bench_module.render_table(result))
    if json_path is not None:
        bench_module.write_json(result, json_path)
    if plot_path is not None:
        bench_module.plot(result, plot_path)
    written = [p for p in (json_path, plot_path) if p is not None]
    if written and not quiet:
        click.echo(f"wrote {' and '.join(written)}", err=True)
    result.check_measured()  # the table and files show the errors; the exit code says none measured
    if stress is not None:
        _stress_and_project(result, stress, time_limit, model=model, n_gpu_layers=n_gpu_layers, threads=threads,
                            quiet=quiet)


def _stress_and_project(result, n_problems, time_limit, *, model, n_gpu_layers, threads, quiet) -> None:
    from .bench.stress import project, stress, stress_report

    rows = [r for r in result.rows if r.error is None and r.generated_tokens_per_s]
    if not rows:
        raise click.ClickException("no engine row succeeded: nothing to stress or project from")
    rows = [r for r in rows if not r.confidence]
    if not rows:
        raise click.ClickException("no engine row without confidence succeeded: nothing to stress or project from")
    best = max(rows, key=lambda r: r.generated_tokens_per_s)
    settings = result.settings
    outcome = stress(problems=n_problems, warmup=min(500, max(1, n_problems // 10)), progress=not quiet,
                     model=model, n_gpu_layers=n_gpu_layers, threads=threads, batch_size=best.batch_size)
    prompt = settings.prompt_tokens_per_problem
    projection = project(
        problems=n_problems, samples=settings.samples, max_tokens=settings.max_tokens,
        prompt_tokens=round(sum(prompt) / len(prompt)) if prompt else 0,
        generated_per_second=best.generated_tokens_per_s, prompt_per_second=best.prompt_tokens_per_s,
        time_limit=time_limit,
    )
    click.echo()
    stress_report(outcome, projection, echo=click.echo)
    click.echo(f"(projection from the best row: batch {best.batch_size}, "
               f"{best.generated_tokens_per_s:.1f} generated and {best.prompt_tokens_per_s:.1f} prompt tokens/s)")


@cli.command("info", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("model_path", metavar="MODEL", required=False, type=click.Path(dir_okay=False))
@config_options(only=("n_gpu_layers", "ctx", "max_tokens", "batch_size", "max_memory", "kv_type", "split_mode",
                      "tensor_split", "main_gpu"))
@click.option("--gpus", "gpus", default=None,
              help="GPU memory sizes to split the estimate over, e.g. 15GB,15GB or 2x15GB [default: the GPUs NVML "
                   "sees, when there are several].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def info_command(model_path, as_json, **options) -> None:
    """Describe a GGUF MODEL and estimate the memory of a configuration, from its header alone.

    Without MODEL it describes the embedded SmolLM2-135M-Instruct Q4_1.

    \b
    Examples:
      aimo-gguf info models/qwen2.5-math-7b-Q4_K_M.gguf --ctx 4096 -b 16 -ngl 20
      aimo-gguf info models/qwen2.5-math-7b-Q4_K_M.gguf -b auto --max-memory 15GiB -ngl -1
    """
    import json

    from .info import describe

    result = describe(model_path, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())


@cli.command("quantize", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=OUTPUT_FILE)
@click.option("--type", "type_", required=True, help="llama.cpp file type: Q4_K_M, Q5_K_M, Q8_0, F16, ...")
@config_options(only=("threads",))
@click.option("--imatrix", type=click.Path(dir_okay=False),
              help="Importance matrix from llama-imatrix (GGUF or legacy .dat); needed by IQ1/IQ2 and Q2_K_S.")
@click.option("--allow-requantize", is_flag=True,
              help="Accept an already quantized input (loses quality: quantize from F16/BF16 when you can).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def quantize_command(src, dst, type_, threads, imatrix, allow_requantize, force) -> None:
    """Quantize the GGUF model IN into OUT through llama-cpp-python (no llama.cpp build needed).

    \b
    Example:
      aimo-gguf quantize models/qwen2.5-math-7b-F16.gguf models/qwen2.5-math-7b-Q4_K_M.gguf --type Q4_K_M
    """
    from .quantize import quantize

    out = quantize(src, dst, type=type_, threads=threads, imatrix=imatrix, allow_requantize=allow_requantize,
                   force=force)
    click.echo(out)


@cli.command("split", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=OUTPUT_FILE)
@click.option("--max-tensors", type=click.IntRange(min=1), default=None, help="Most tensors per part.")
@click.option("--max-size", default=None, help="Most tensor bytes per part, e.g. 45GB (a Hub file holds 50 GB).")
@click.option("--force", is_flag=True, help="Overwrite parts that exist.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def split_command(src, dst, max_tensors, max_size, force, quiet) -> None:
    """Write the GGUF model IN as a split model OUT-00001-of-0000N.gguf, ... (llama.cpp's gguf-split format).

    Every command takes the split model by its first part; prints the parts' paths.

    \b
    Example:
      aimo-gguf split models/big.gguf models/big.gguf --max-size 45GB
    """
    from .errors import InputError
    from .fit.memory import parse_size
    from .gguf.parts import split_gguf

    size = 0
    if max_size is not None:
        try:
            size = parse_size(max_size)
        except (InputError, ValueError):
            raise click.BadParameter(f"{max_size!r} is not a size like 45GB", param_hint="--max-size") from None
    for part in split_gguf(src, dst, max_tensors=max_tensors or 0, max_size=size, force=force, progress=not quiet):
        click.echo(part)


@cli.command("synth", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.option("--like",
              help="A model of the registry or another known shape (see aimo-gguf synth --list), "
                   "or a Hugging Face config.json (or the folder holding it).")
@click.option("-o", "--output", type=OUTPUT_FILE, help="The GGUF file to write.")
@click.option("--type", "type_", default=None,
              help="llama.cpp file type of the result [default: Q4_K_M; MXFP4_MOE for gpt-oss].")
@config_options(only=("threads",))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--dry-run", is_flag=True, help="Print the shapes, parameters and sizes; write nothing.")
@click.option("--tokenizer", type=click.Path(dir_okay=False),
              help="A GGUF whose BPE tokenizer the file gets, padded to the real vocabulary "
                   "[default: the embedded SmolLM2's].")
@click.option("--logit-std", type=float, default=None,
              help=f"Spread the logits this much (standard deviation): {PEAKED_LOGIT_STD:g} gives distributions "
                   "peaked like a trained model's (SmolLM2's on math text) [default: near-uniform, as random "
                   "weights give].")
@click.option("--list", "list_shapes", is_flag=True, help="List the shapes --like knows by name.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def synth_command(like, output, type_, threads, seed, force, dry_run, tokenizer, logit_std, list_shapes,
                  quiet) -> None:
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
    import json

    from .synth import describe, known_shapes, spec_like, synth

    if list_shapes:
        for name in known_shapes():
            click.echo(name)
        return
    if like is None:
        raise click.UsageError("Missing option '--like'.")
    spec = spec_like(like)
    if dry_run:
        click.echo(json.dumps(describe(spec, type_), indent=2))
        return
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output'.")
    click.echo(synth(like, output, type=type_, threads=threads, seed=seed, force=force, progress=not quiet,
                     tokenizer=tokenizer, logit_std=logit_std))


@cli.command("convert", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("source")
@click.option("--quant", default="Q4_K_M", show_default=True,
              help="Comma-separated llama.cpp file types to quantize to ('' for none).")
@click.option("--outtype", type=click.Choice(["f16", "bf16", "f32"]), default="f16", show_default=True,
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
@click.option("--force", is_flag=True, help="Replace outputs that already exist.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
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
    from .convert import convert

    result = convert(source, progress=not quiet, **options)
    for path in [*result.paths(), result.manifest]:
        click.echo(path)


@cli.command("report", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("summaries", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--plot", "plot_path", type=OUTPUT_FILE,
              help="Also draw accuracy against k and against generated tokens per problem to this PNG "
                   "(needs matplotlib).")
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
    from .outputs import check_distinct, check_writable
    from .report import plot, read_report, render, require_matplotlib

    reports = [read_report(path) for path in summaries]
    if plot_path is not None:
        require_matplotlib()
        check_distinct({**{f"summary {i + 1}": p for i, p in enumerate(summaries)}, "--plot": plot_path},
                       outputs={"--plot"})
        check_writable(plot_path, "the plot")
    click.echo(render(reports))
    if plot_path is not None:
        plot(reports, plot_path)
        click.echo(f"wrote {plot_path}", err=True)


@cli.command("recipes", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
def recipes_command() -> None:
    """List the --recipe bundles of run: what each is for, where its settings come from, the settings.

    Any flag given with --recipe overrides the recipe's value.
    """
    from .recipes import RECIPES

    click.echo("\n\n".join(r.describe() for r in RECIPES.values()))


@cli.command("models", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.option("--ctx", default=8192, show_default=True, type=click.IntRange(min=64),
              help="Context of one sequence (capped at each model's trained context).")
@click.option("-b", "--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Sequences decoded together.")
@config_options(only=("kv_type",))
@click.option("--gpu", "gpus", default="16GB,80GB,2x15GB,4x22GB", show_default=True,
              help="Comma-separated GPU memory sizes to fit (16GB = Kaggle T4/P100, 80GB = H100); NxSIZE is N "
                   "GPUs of that size with the model split by layer (2x15GB = Kaggle's 2 x T4, 4x22GB = 4 x L4).")
@click.option("--pull", "show_pull", is_flag=True, help="Also print the aimo-gguf pull command of each model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def models_command(ctx, batch_size, kv_type, gpus, show_pull, as_json) -> None:
    """Recommended models (models/registry.json) and the --n-gpu-layers that fits each GPU.

    The fit is arithmetic on the listed sizes (weights + KV cache + a 1 GiB
    reserve and the compute buffer), not a measurement: check with
    aimo-gguf bench on the GPU.

    \b
    Example:
      aimo-gguf models --ctx 16384 -b 16 --kv-type q8_0 --gpu 15GiB,80GB
    """
    import json

    from .fit.shares import parse_devices
    from .models import fits_json, fits_table, load_registry

    sizes = [g.strip() for g in gpus.split(",") if g.strip()]
    for g in sizes:
        try:
            parse_devices(g)
        except Exception:
            raise click.BadParameter(f"{g!r} is not a size like 16GB, 15GiB or 2x15GB", param_hint="--gpu") from None
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


@cli.command("compare", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("reference", metavar="MODEL_REF", type=click.Path(dir_okay=False))
@click.argument("quantized", metavar="MODEL_Q", type=click.Path(dir_okay=False))
@click.option("--text", type=click.Path(dir_okay=False),
              help="UTF-8 text to compare next-token predictions over [default: a bundled math text].")
@click.option("--problems", type=click.Path(dir_okay=False),
              help="Also solve this problem set with both models: accuracy and speed.")
@click.option("--ctx", default=512, show_default=True, type=click.IntRange(min=16),
              help="Tokens per chunk of the text.")
@click.option("--max-text-tokens", type=click.IntRange(min=2), default=None, help="Compare on the first N tokens only.")
@config_options(only=("n_gpu_layers", "threads", "samples", "max_tokens", "seed"))
@click.option("-b", "--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Sequences decoded together on the problem set.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def compare_command(reference, quantized, as_json, quiet, **options) -> None:
    """How much does quantization change a model? Compare MODEL_Q with MODEL_REF.

    Reports next-token top-1 agreement, KL divergence and perplexity over a
    text and, with --problems, both models' accuracy and speed.

    \b
    Example:
      aimo-gguf compare models/m-F16.gguf models/m-Q4_K_M.gguf --problems data/val.csv -n 1
    """
    import json

    from .compare import compare

    result = compare(reference, quantized, progress=not quiet, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())


@cli.command("pull", cls=AimoCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("repo")
@click.argument("filename")
@click.option("--revision", default=None, help="Branch, tag or commit of the repo [default: main].")
@click.option("--models-dir", default="models", show_default=True, type=click.Path(file_okay=False),
              help="Folder to put the file in.")
@click.option("--force", is_flag=True, help="Replace the file if it is already there.")
def pull_command(repo, filename, revision, models_dir, force) -> None:
    """Download FILENAME (a .gguf) of Hugging Face Hub repo REPO into the models folder.

    Uses the Hugging Face cache and its variables (HF_HOME, HF_TOKEN,
    HF_HUB_OFFLINE); prints the path of the model file.

    \b
    Example:
      aimo-gguf pull bartowski/Qwen2.5-Math-7B-Instruct-GGUF Qwen2.5-Math-7B-Instruct-Q4_K_M.gguf
    """
    from .pull import pull

    click.echo(pull(repo, filename, revision=revision, models_dir=models_dir, force=force))
