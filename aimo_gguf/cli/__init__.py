"""The ``aimo-gguf`` command line: a thin layer over the library.

Commands parse options, call the library and render its results; each module
holds a family of commands, ``options`` the flags they share (declared once)
and ``base`` the group and its one-line errors.
"""

from . import files, measure, run  # noqa: F401 - each registers its commands on the group
from .base import cli

main = cli  # the console script's entry point

__all__ = ["cli", "main"]
