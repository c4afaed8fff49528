"""The command group and its one-line errors: library errors and click's usage errors become one
``Error:`` line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import os
import re
import shlex
import sys

import click

from .. import __version__
from ..errors import AimoError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


def standard_streams() -> None:
    """Started with stdin, stdout or stderr closed (``2>&-``), a process would hand that descriptor to the next
    file it opens, and write its progress into a journal or a model: point each closed one at /dev/null first."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:  # Python found the descriptor closed at start-up
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - the process's own stream


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
    """The command group: an unknown command is one line too; every command is an ``AimoCommand``."""

    command_class = AimoCommand

    def main(self, *args, **kwargs):
        standard_streams()
        return super().main(*args, **kwargs)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            raise _one_line(e) from None


@click.group(cls=AimoGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="aimo-gguf")
def cli() -> None:
    """Solve olympiad math problems with quantized GGUF models through llama.cpp.

    The same command runs on a CPU build or a CUDA build of llama-cpp-python:
    --n-gpu-layers offloads what the GPU can hold and falls back to the CPU.
    """
