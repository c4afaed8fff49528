"""``aimo-gguf run`` and ``aimo-gguf recipes``: every run flag is a RunConfig field."""

from __future__ import annotations

import sys

import click

from .base import cli
from .options import OUTPUT_FILE, config_options, quiet_option


@cli.command()
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
@quiet_option("No progress bar and no results table.")
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
    from ..pipeline.runner import run as run_problems
    from ..pipeline.summary import results_table

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
            click.echo(results_table(result.results))
            click.echo()
        click.echo(summary.table())
        click.echo(f"wrote {output}" + (f" and {summary_path}" if summary_path else ""), err=True)
    if result.exit_code:
        sys.exit(result.exit_code)


@cli.command("recipes")
def recipes_command() -> None:
    """List the --recipe bundles of run: what each is for, where its settings come from, the settings.

    Any flag given with --recipe overrides the recipe's value.
    """
    from ..recipes import RECIPES

    click.echo("\n\n".join(r.describe() for r in RECIPES.values()))
