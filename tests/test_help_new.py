"""Every command this family of features added has --help with an example."""
from __future__ import annotations

from conftest import run_cli

COMMANDS = ["view", "design bounds", "design ds-memory", "design ds-shape", "mesh spatial-index create",
            "mesh spatial-index db", "skeleton spatial-index create", "skeleton spatial-index db",
            "queue cp", "queue mv", "queue rezero", "image roi"]


def test_new_commands_have_examples():
    from click.testing import CliRunner

    from igneous_like.cli import cli

    runner = CliRunner()  # in-process: twelve subprocesses would cost a minute on a busy machine
    for command in COMMANDS:
        result = runner.invoke(cli, [*command.split(), "--help"])
        assert result.exit_code == 0 and "Example" in result.output, command
    assert "Example" in run_cli("mesh", "spatial-index", "db", "--help").stdout  # and through the real entry
