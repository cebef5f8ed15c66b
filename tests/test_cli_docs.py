"""Every command of `gateway` has help that says something, and a place in docs/cli.md."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.cli import build_parser, main

CLI_DOC = Path(__file__).parent.parent / "docs" / "cli.md"


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
             ) -> list[tuple[tuple[str, ...], str]]:
    """Every command path (`("keys", "create")`) with its one-line help."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                found.append(((*prefix, name), helps.get(name, "")))
                found.extend(commands(sub, (*prefix, name)))
    return found


ALL = commands(build_parser())


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in ALL}
    assert {"serve", "upload", "recordings list", "recordings get", "recordings hold",
            "keys create", "retention run", "storage check"} <= names


@pytest.mark.parametrize(("path", "summary"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_help_exits_0_and_says_something(
    path: tuple[str, ...], summary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gateway {' '.join(path)}")
    assert len(summary) >= 15, f"`gateway {' '.join(path)}` needs a one-line help"


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_documented_in_cli_md(path: tuple[str, ...]) -> None:
    assert f"gateway {' '.join(path)}" in CLI_DOC.read_text()
