"""``headstart report RUN [DATA]``: write the run's report.html again, on its test split or on other data."""

from __future__ import annotations

import click

from ._common import data_options, log


@click.command("report", epilog="""\b
Examples:
  headstart report runs/photos                         # rebuild runs/photos/report.html (recorded test split)
  headstart report runs/photos new_photos/ --out new.html   # the same report on other labelled data
  headstart report runs/tickets march.csv --text-column body --out march.html
""")
@click.argument("run")
@click.argument("data", required=False)
@click.option("--out", "-o", "out_file", default=None, help="HTML file to write (default: RUN/report.html).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--device", default=None)
@data_options
def command(run: str, data: str | None, out_file: str | None, batch_size: int, device: str | None,
            text_column: str | None, label_column: str | None, encoding: str | None) -> None:
    """One self-contained HTML page: data, choices, scores against the baseline, mistakes and why."""
    from ..workflows.report import rebuild_report

    path = rebuild_report(run, data, out=out_file, batch_size=batch_size, device=device, text_column=text_column,
                          label_column=label_column, encoding=encoding, log=log)
    log(f"Open {path} in a browser; it needs no network.")
