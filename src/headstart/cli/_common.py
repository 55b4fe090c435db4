"""Options shared by several commands, declared once."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import Console

# Piped output (files, CI logs, tests) gets a wide console so tables are not cut to 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--text-column``, ``--label-column`` and ``--encoding``: the same flags on every command
    that reads data, passed to the command as ``text_column``, ``label_column`` and ``encoding``."""
    f = click.option("--encoding", default=None, metavar="NAME",
                     help="Encoding of a text table, e.g. cp1252 or latin-1 (default: UTF-8, with or without "
                          "a byte-order mark; a file that is not says which encoding it probably is).")(f)
    f = click.option("--text-column", default=None, help="Text column of a table (default: text, sentence, ...).")(f)
    f = click.option("--label-column", default=None, help="Label column of a table (default: label, class, ...).")(f)
    return f


def log(message: str) -> None:
    from rich.markup import escape

    console.print(f"[dim]•[/dim] {escape(message)}")


class RegistryChoice(click.Choice):
    """A ``click.Choice`` whose names are read from a registry each time they are needed, never
    retyped; reading them late keeps ``headstart --help`` from importing the libraries behind them."""

    def __init__(self, names: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._names = names
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._names())


class RegistryHelpOption(click.Option):
    """An option whose help text is written from a registry when the help is shown."""

    def __init__(self, *args: Any, help_from: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._help_from = help_from

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self._help_from()
        return super().get_help_record(ctx)
