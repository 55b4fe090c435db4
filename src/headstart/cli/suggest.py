"""``headstart suggest POOL --model RUN``: which unlabelled items to label next."""

from __future__ import annotations

import click

from ._common import RegistryChoice, RegistryHelpOption, out


def _strategies() -> list[str]:
    from ..quality import SELECTORS

    return SELECTORS.names()


def _strategy_help() -> str:
    from ..quality import DEFAULT_SELECTOR, SELECTORS

    return "How to choose (default: " + DEFAULT_SELECTOR + "): " + "; ".join(
        f"{name}: {SELECTORS.get(name).description}" for name in SELECTORS.names()) + "."


@click.command("suggest", epilog="""\b
Examples:
  headstart suggest unlabelled/ --model runs/photos --n 50          # a folder of images, no class folders
  headstart suggest new_tickets.csv --model runs/tickets --n 100 --strategy margin -o to_label.csv
  headstart suggest pool.csv --model runs/tickets --labelled train.csv   # the data the model was trained on
""")
@click.argument("pool")
@click.option("--model", "run", required=True, help="A saved model folder (from `headstart fit --out`).")
@click.option("--n", default=50, show_default=True, type=int, help="How many items to suggest.")
@click.option("--strategy", default="mix", type=RegistryChoice(_strategies), cls=RegistryHelpOption,
              help_from=_strategy_help)
@click.option("--labelled", default=None, metavar="DATA",
              help="The data already labelled (default: the training data the model records, when it can be read); "
                   "diversity strategies spread away from it, and a pool item that repeats one is an error.")
@click.option("-o", "--output", default="to_label.csv", show_default=True, help="CSV of the items to label, first first.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--device", default=None)
@click.option("--text-column", default=None, help="Text column of a table (default: text, sentence, ...).")
@click.option("--encoding", default=None, metavar="NAME", help="Encoding of a text table (default: UTF-8).")
def command(pool: str, run: str, n: int, strategy: str, labelled: str | None, output: str, seed: int,
            batch_size: int, device: str | None, text_column: str | None, encoding: str | None) -> None:
    """Rank the unlabelled items of POOL (an image folder or a table of texts) by how much labelling them
    should help RUN, and write the first N to a CSV."""
    from rich.markup import escape
    from rich.table import Table

    from ..api import load
    from ..workflows.quality import suggest, write_suggestions
    from ._common import log

    model = load(run)
    rows = suggest(pool, model, n=n, strategy=strategy, labelled=labelled, seed=seed, device=device,
                   batch_size=batch_size, text_column=text_column, encoding=encoding, log=log)
    write_suggestions(rows, output)
    table = Table("rank", "item", "model's guess", "confidence", "margin", title=f"Label these first ({strategy})",
                  title_justify="left")
    for r in rows[:15]:
        table.add_row(str(r["rank"]), escape(r["item"]), escape(r["predicted"]), f"{r['confidence']:.3f}",
                      f"{r['margin']:.3f}")
    out.print(table)
    out.print(f"{len(rows)} items written to {output}" + (" (first 15 shown)" if len(rows) > 15 else ""))
