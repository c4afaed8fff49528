"""``python -m aimo_gguf``: the same as the ``aimo-gguf`` command."""

from .cli import cli

if __name__ == "__main__":
    cli(prog_name="aimo-gguf")
