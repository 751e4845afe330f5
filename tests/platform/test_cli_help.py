"""Every ``veza-ops`` command prints its help: argparse %-formats help texts when it prints them,
so a stray ``%`` in one text breaks ``--help`` for the command and its parent."""

from __future__ import annotations

import argparse

import pytest

from veza_ops.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias names the same parser
                    seen.add(id(sub))
                    found += _commands(sub, [*path, name])
    return found


COMMANDS = _commands(build_parser(), [])


def test_the_walk_finds_the_nested_commands() -> None:
    assert ["reject"] in COMMANDS and ["sandbox", "status"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "veza-ops")
def test_help_prints_and_exits_0(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out
