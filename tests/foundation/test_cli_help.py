"""`mail-il COMMAND --help` ends with the command's example lines (its module docstring's), so a user
sees how to call it without opening the source."""

import importlib

import pytest

from mail_policy_node import cli


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_help_shows_the_commands_examples(name, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "\nexamples:\n" in text, text[-800:]
    shown = text.split("\nexamples:\n", 1)[1].splitlines()
    # each line runs the command: itself, or the module through a launcher (torchrun ... -m mail_policy_node.cli)
    runs_it = (f"mail-il {name}", f"mail_policy_node.cli {name}")
    assert shown and all(line.strip().startswith(runs_it[0]) or runs_it[1] in line for line in shown if line.strip()), \
        shown
    module = importlib.import_module(cli.SUBCOMMANDS[name][0])
    assert shown[0] in module.__doc__  # the docstring's lines, as written there
