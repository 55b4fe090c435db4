"""Options shared by several commands, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

import sys

# Piped output (files, CI logs, tests) gets a wide console so tables are not cut to 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--text-column", default=None, help="Text column of a table (default: text, sentence, ...).")(f)
    f = click.option("--label-column", default=None, help="Label column of a table (default: label, class, ...).")(f)
    return f


def log(message: str) -> None:
    from rich.markup import escape

    console.print(f"[dim]•[/dim] {escape(message)}")
