"""The one error hierarchy of aimo-gguf.

Library code raises these; the CLI turns each into one line on stderr and a
non-zero exit code (``exit_code``), never a traceback.
"""

from __future__ import annotations


class AimoError(Exception):
    """Base class of every error aimo-gguf reports to a user."""

    exit_code = 1


class InputError(AimoError):
    """The user's input (a problems file, an option value) is unusable."""

    exit_code = 2


class ModelError(AimoError):
    """A model file is missing, is not GGUF, or llama.cpp cannot load it."""

    exit_code = 2


class EngineError(AimoError):
    """llama.cpp failed while decoding, in a way the engine cannot recover from."""

    exit_code = 1


class OutputError(AimoError):
    """A result file could not be written (a full disk, an I/O error)."""

    exit_code = 2
