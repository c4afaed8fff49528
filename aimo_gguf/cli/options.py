"""Options declared once: the RunConfig fields as flags, the parameter types, and the bundles every
command shares (``-q``, ``--force``, ``--json``)."""

from __future__ import annotations

import typing
from dataclasses import MISSING

import click

from ..config import CHECK_BATCH_SIZE, ENV_PREFIX, RunConfig, option_fields
from ..errors import AimoError, InputError

SHORT_FLAGS = {"model": "-m", "n_gpu_layers": "-ngl", "batch_size": "-b", "samples": "-n", "threads": "-t"}


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
        from ..outputs import check_file_name

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


class MemorySize(click.ParamType):
    """A memory size ('45GB', '15GiB'), or with ``devices`` a comma-separated list of GPU sizes where
    NxSIZE is N GPUs of that size: the text comes back as given once every part parses."""

    def __init__(self, *, devices: bool = False) -> None:
        self.devices = devices
        self.name = "SIZE[,SIZE...]" if devices else "SIZE"

    def convert(self, value, param, ctx):
        from ..fit.memory import parse_size
        from ..fit.shares import parse_devices

        parts = [p.strip() for p in value.split(",") if p.strip()] if self.devices else [value]
        for part in parts:
            try:
                parse_devices(part) if self.devices else parse_size(part)
            except InputError:
                like = "16GB, 15GiB or 2x15GB" if self.devices else "45GB"
                self.fail(f"{part!r} is not a size like {like}", param, ctx)
        return value


def quiet_option(help: str = "No progress on stderr."):
    """``-q``: what a command leaves out is its own (progress, a table)."""
    return click.option("-q", "--quiet", is_flag=True, help=help)


def force_option(what: str):
    """``--force``: replace ``what`` when it is already there."""
    return click.option("--force", is_flag=True, help=f"Replace {what} if already there.")


# --json means one thing in every command: the result as JSON on stdout instead of the table.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of the table.")


def check_batch_option(help: str):
    """``-b`` of the commands that size or compare models rather than run them (config.CHECK_BATCH_SIZE)."""
    return click.option("-b", "--batch-size", default=CHECK_BATCH_SIZE, show_default=True,
                        type=click.IntRange(min=1), help=help)
