"""Tool-integrated reasoning: code blocks detected, run in the sandbox, their output decoded
back into the same sequence while the others go on."""

from __future__ import annotations

from aimo_gguf.cli import cli


def test_bad_tir_options_are_one_line(runner):
    for args, message in [(["--tir-weight", "0.5"], "--tir-weight must be 1 or more"),
                          (["--tool-timeout", "0"], "--tool-timeout must be positive"),
                          (["--max-tool-calls", "-1"], "--max-tool-calls must be 0 or more")]:
        result = runner.invoke(cli, ["run", *args])
        assert result.exit_code == 2 and message in result.stderr
