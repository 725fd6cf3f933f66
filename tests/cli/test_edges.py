"""The command line's edges: progress only on a terminal, log lines for a person on a
terminal and JSON elsewhere, and help for every command and option."""

from __future__ import annotations

import argparse
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from app.cli import build_parser
from app.cli.runtime import Progress
from app.logs import setup_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    log = io.StringIO()
    with Progress(log) as progress:
        progress.update("building 2026-01-01: 1/2 domains")
        progress.update("building 2026-01-01: 2/2 domains")
        progress.done("built 2026-01-01: 2 reports")
    assert log.getvalue() == "built 2026-01-01: 2 reports\n"

    terminal = Terminal()
    with Progress(terminal) as progress:
        progress.update("building: 1/2")
        progress.done("built")
    assert terminal.getvalue() == "\r\x1b[Kbuilding: 1/2\r\x1b[Kbuilt\n"


def test_an_error_after_progress_starts_on_its_own_line() -> None:
    terminal = Terminal()
    with pytest.raises(RuntimeError), Progress(terminal) as progress:
        progress.update("delivering: 3/9")
        raise RuntimeError
    assert terminal.getvalue().endswith("delivering: 3/9\n")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("stream", "fmt", "json"),
    [
        (Terminal(), "auto", False),
        (io.StringIO(), "auto", True),
        (Terminal(), "json", True),
        (io.StringIO(), "text", False),
    ],
)
def test_log_lines_readable_on_a_terminal_and_json_elsewhere(
    stream: io.StringIO, fmt: str, json: bool
) -> None:
    setup_logging("INFO", fmt, stream)
    logging.getLogger("app.test").info("report_built", extra={"fields": {"domain": "a.example"}})
    line = stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    if json:
        entry = orjson.loads(line)
        assert (entry["event"], entry["domain"]) == ("report_built", "a.example")
    else:
        assert line == 'info app.test: report_built domain="a.example"\n'


def _commands(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`{path} {name}` has no help"
                yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    walked = list(_commands(build_parser(), "tlsrpt"))
    assert {"tlsrpt token revoke", "tlsrpt suppress add"} <= {p for p, _ in walked}
    for path, parser in walked:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"`{path}` {name}: no help"
