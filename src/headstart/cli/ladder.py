"""``headstart ladder DATA``: accuracy at each label budget, zero-shot to all labels."""

from __future__ import annotations

import click

from ._common import data_options, log, out


@click.command("ladder", epilog="""\b
Examples:
  headstart ladder builtin:bbc-news --budgets 0,8,32,all --out runs/ladder-bbc
  headstart ladder photos/ --budgets 0,4,16 --seeds 5 --out runs/ladder-photos
  headstart ladder tickets.csv --finetune --out runs/l        # adds SetFit-style and LP-FT rungs (slow on CPU)
Writes ladder.json, ladder.md and ladder.png to --out.
""")
@click.argument("data")
@click.option("--budgets", default="0,8,32,all", show_default=True, help="Labelled examples per class; 0 = zero-shot.")
@click.option("--seeds", default=3, show_default=True, help="Draws of the labelled examples per budget.")
@click.option("--backbone", "-b", default=None, help="Backbone (default by modality).")
@click.option("--finetune", is_flag=True, help="Also run the fine-tuning rungs (setfit for text, lp-ft).")
@click.option("--margin", default=2.0, show_default=True, help="Recommend the cheapest rung within this many points of the best.")
@click.option("--out", "-o", "out_dir", default=None, help="Folder for the table and the plot.")
@data_options
def command(data: str, budgets: str, seeds: int, backbone: str | None, finetune: bool, margin: float,
            out_dir: str | None, text_column: str | None, label_column: str | None, encoding: str | None) -> None:
    """Zero-shot, few-shot, linear probe (and fine-tuning) on one fixed test set, per label budget."""
    from ..data import load_data
    from ..errors import ConfigError
    from ..workflows.ladder import parse_budgets, run_ladder

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}.")
    dataset = load_data(data, text_column=text_column, label_column=label_column, encoding=encoding)
    result = run_ladder(dataset, budgets=parse_budgets(budgets), seeds=seeds, backbone=backbone, finetune=finetune,
                        margin=margin / 100, out=out_dir, log=log)
    out.print(f"[bold]{result['data']}[/bold] with {result['backbone']}: test n = {result['n_test']}, "
              f"chance {100 * result['chance']:.1f}%")
    for r in result["summary"]:
        out.print(f"  {r['budget']:>4} per class  {r['strategy']:<13} {100 * r['mean']:5.1f} ± {100 * r['std']:.1f}  "
                  f"({r['runs']} run(s), {r['seconds']:.1f} s each)")
    out.print(f"[bold]Recommendation[/bold]: {result['recommendation']}.")
    if out_dir:
        out.print(f"Table and plot: {out_dir}/ (ladder.json, ladder.md, ladder.png)")
