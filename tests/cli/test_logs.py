"""Log levels, formats and the run's log file (boundary_audit.logs)."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_audit.logs import (
    LineWriter,
    auto_format,
    configure_logging,
    get_logger,
    is_terminal,
    normalize_level,
)

#: Threads x lines written at once in the interleaving test: enough that
#: unsynchronised writes of long lines would tear some.
WRITERS, LINES = 8, 200


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging("info", "json")


@pytest.mark.parametrize(
    ("given", "level"),
    [("warn", "warning"), ("WARN", "warning"), ("Warning", "warning"), (" debug ", "debug")],
)
def test_level_spellings(given: str, level: str) -> None:
    assert normalize_level(given) == level


def test_an_unknown_level_names_coders_choices() -> None:
    with pytest.raises(ValueError, match="expected one of error, warn, info, debug, got 'loud'"):
        normalize_level("loud")


def test_console_on_a_terminal_json_elsewhere() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert is_terminal(tty)
            assert auto_format(None, tty) == "console"
            assert auto_format("json", tty) == "json"
    finally:
        os.close(master)
        os.close(slave)
    assert auto_format(None, io.StringIO()) == "json"
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)


def test_the_file_gets_info_whatever_the_terminal_level(tmp_path: Path) -> None:
    terminal = io.StringIO()
    path = tmp_path / "run.jsonl"
    with path.open("w") as fh:
        configure_logging("warn", "console", terminal, file=LineWriter(fh))
        log = get_logger("test")
        log.debug("not anywhere")
        log.info("file only", n=1)
        log.warning("both")
    assert "file only" not in terminal.getvalue()
    assert "both" in terminal.getvalue()
    assert not terminal.getvalue().startswith("{")  # console format
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [("file only", "info"), ("both", "warning")]


def test_debug_reaches_the_file_when_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with path.open("w") as fh:
        configure_logging("debug", "json", io.StringIO(), file=LineWriter(fh))
        get_logger("test").debug("detail")
    assert json.loads(path.read_text())["event"] == "detail"
    assert logging.getLogger().level == logging.DEBUG


def test_line_writer_keeps_concurrent_lines_whole(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    with path.open("w") as fh:
        writer = LineWriter(fh)

        def write(n: int) -> None:
            for i in range(LINES):
                writer.write(f"{n}:{i}:" + "x" * 10_000 + "\n")

        threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == WRITERS * LINES
    assert all(line.endswith("x" * 10_000) and line.count(":") == 2 for line in lines)
