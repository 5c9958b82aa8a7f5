"""Tests for tlkit.cli.output: consoles set up again per command, tables that fold, one-line errors."""

from __future__ import annotations

import io

import pytest
import typer

from tlkit.cli.output import PIPE_WIDTH, CommandConsole, err, folding_table, friendly
from tlkit.errors import ConfigError


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_renew_follows_the_streams_of_this_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "77")
    monkeypatch.setattr("sys.stdout", _Terminal())
    console = CommandConsole()
    assert console.width == 77
    monkeypatch.setattr("sys.stdout", io.StringIO())  # a pipe: never cut or folded
    console.renew()
    assert console.width == PIPE_WIDTH and not console.stderr
    monkeypatch.setattr("sys.stderr", _Terminal())
    stderr_console = CommandConsole(stderr=True)
    stderr_console.renew()
    assert stderr_console.stderr and stderr_console.width == 77


def test_friendly_turns_errors_into_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    @friendly
    def failing(kind: str) -> None:
        raise ConfigError("bad value\nsecond line") if kind == "config" else KeyboardInterrupt

    with pytest.raises(typer.Exit) as info:
        failing("config")
    assert info.value.exit_code == 1
    assert capsys.readouterr().err.strip() == "error: bad value second line"  # one line
    with pytest.raises(typer.Exit) as info:
        failing("interrupt")
    assert info.value.exit_code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_folding_table_columns_fold() -> None:
    table = folding_table("a", "b", title="t")
    assert [c.header for c in table.columns] == ["a", "b"] and {c.overflow for c in table.columns} == {"fold"}
    assert table.title == "t"


def test_version() -> None:
    from typer.testing import CliRunner

    from tlkit._version import __version__
    from tlkit.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tlkit {__version__}"


def test_an_error_message_is_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets in a message (an install command, a list) are printed as they are."""
    err.renew()

    @friendly
    def failing() -> None:
        raise ConfigError('onnx is not installed: pip install "tlkit[export]"; classes [cat, dog]')

    with pytest.raises(typer.Exit):
        failing()
    assert capsys.readouterr().err.strip() == 'error: onnx is not installed: pip install "tlkit[export]"; classes [cat, dog]'


def test_help_off_a_terminal_is_not_cut_at_80_columns() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TERMINAL_WIDTH", "COLUMNS")}
    text = subprocess.run([sys.executable, "-m", "tlkit", "finetune", "--help"], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert "…" not in text and "[default: efficientnet_lite0]" in text
    assert max(len(line) for line in text.splitlines()) <= 120
