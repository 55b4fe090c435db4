"""Options shared by several commands, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--text-column", default=None, help="Text column of a table (default: text, sentence, ...).")(f)
    f = click.option("--label-column", default=None, help="Label column of a table (default: label, class, ...).")(f)
    return f


def log(message: str) -> None:
    console.print(f"[dim]•[/dim] {message}")
