"""``headstart strategies``: the registered strategies, and one strategy's options with their rules."""

from __future__ import annotations

import click

from ._common import RegistryChoice, out


def _names() -> list[str]:
    from ..methods import STRATEGIES

    return STRATEGIES.names()


@click.command("strategies", epilog="""\b
Examples:
  headstart strategies                 # every strategy, one line each
  headstart strategies lora            # its options: type, default, allowed values
  headstart fit tickets.csv --strategy lora --option r=16 --option lr=1e-4
""")
@click.argument("name", required=False, type=RegistryChoice(_names))
def command(name: str | None) -> None:
    """List the adaptation strategies, or the options of one (what `fit --option KEY=VALUE` takes)."""
    from rich.markup import escape
    from rich.table import Table

    from ..methods import STRATEGIES
    from ..options import describe_options

    if name is None:
        table = Table("strategy", "what it does", "trains the backbone", "needs")
        trains = {"no": "no", "yes": "yes", "may": "if it chooses to"}
        for n in STRATEGIES:
            entry = STRATEGIES.get(n)
            needs = "cached features" if entry.needs_features else "the backbone in the loop"
            if entry.needs_target:
                needs += ", unlabelled target data (--target)"
            if entry.pool != "no":
                needs += f", unlabelled data (--unlabelled){'' if entry.pool == 'needed' else ', optional'}"
            table.add_row(n, escape(entry.description), trains[entry.trains], needs)
        out.print(table)
        out.print("Options of one strategy: [bold]headstart strategies NAME[/bold].")
        return
    rows = describe_options(STRATEGIES.get(name).config_class)
    table = Table("option", "type", "default", "allowed", "what it does", title=f"--strategy {name}")
    for r in rows:
        table.add_row(r["name"], r["type"], escape(r["default"]), escape(r["rule"]), escape(r["note"]))
    out.print(table)
    out.print(f"Set one with [bold]--option KEY=VALUE[/bold], e.g. --option {rows[0]['name']}={rows[0]['default']}"
              if rows else "This strategy has no options.")
