"""``headstart check DATA``: validate data before any model work."""

from __future__ import annotations

import json

import click

from ._common import data_options, out

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@click.command("check", epilog="""\b
Examples:
  headstart check photos/                 # image folder: photos/<class>/*.jpg
  headstart check tickets.csv --label-column topic
  headstart check export.csv --encoding cp1252   # a file saved by Excel on Windows
  headstart check train.csv --test test.csv   # also looks for leakage between the two
""")
@click.argument("data")
@click.option("--test", "test_data", default=None, help="A separate test set to check for leakage and label mismatch.")
@click.option("--split-column", default=None, help="Column naming train / val / test for each row.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@data_options
def command(data: str, test_data: str | None, split_column: str | None, as_json: bool,
            text_column: str | None, label_column: str | None, encoding: str | None) -> None:
    """Validate DATA (an image folder or a CSV / TSV / JSONL / Parquet table); exit 1 on errors."""
    from rich.markup import escape
    from rich.table import Table

    from ..data import load_data, validate

    dataset = load_data(data, text_column=text_column, label_column=label_column, split_column=split_column,
                        encoding=encoding)
    test = load_data(test_data, text_column=text_column, label_column=label_column,
                     encoding=encoding) if test_data else None
    report = validate(dataset, test=test)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out.print(f"[bold]{escape(report.source)}[/bold]: {report.n_items} {report.modality}s, "
                  f"{len(report.class_counts)} classes")
        if report.class_counts:
            out.print(escape("  " + ", ".join(f"{k}: {v}" for k, v in report.class_counts.items())))
        if not report.findings:
            out.print("[green]No problems found.[/green]")
        else:
            table = Table(show_header=True, header_style="bold", expand=False)
            for col in ("level", "problem", "where", "fix"):
                table.add_column(col, overflow="fold")
            for f in report.findings:
                where = "\n".join(f.where[:8]) + (f"\n… and {len(f.where) - 8} more" if len(f.where) > 8 else "")
                table.add_row(f"[{STYLE[f.level]}]{f.level}[/]", escape(f.message), escape(where), escape(f.fix))
            out.print(table)
        verdict = "[red]Not ready: fix the errors above.[/red]" if report.errors else "[green]Ready for `headstart fit`.[/green]"
        out.print(verdict)
    if report.errors:
        raise SystemExit(1)
