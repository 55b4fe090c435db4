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
  headstart check builtin:mnist:500 --deep --deep-out candidates.csv   # mislabelled items, near-duplicates, outliers
""")
@click.argument("data")
@click.option("--test", "test_data", default=None, help="A separate test set to check for leakage and label mismatch.")
@click.option("--split-column", default=None, help="Column naming train / val / test for each row.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--deep", is_flag=True,
              help="Also look at the content through a pre-trained backbone's (cached) features: likely mislabelled "
                   "items (confident learning on a K-fold probe), near-duplicates (also across --test) and outliers.")
@click.option("--deep-out", default=None, metavar="FILE",
              help="With --deep: write every candidate to FILE (.csv: one row per candidate; .json: everything).")
@click.option("--backbone", default=None, help="With --deep: the backbone (default: efficientnet-lite0 for images, "
                                                "minilm-l6 for texts).")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 20), help="With --deep: folds of the probe.")
@click.option("--show", default=10, show_default=True, type=click.IntRange(0), help="With --deep: candidates shown per kind.")
@data_options
def command(data: str, test_data: str | None, split_column: str | None, as_json: bool, deep: bool,
            deep_out: str | None, backbone: str | None, folds: int, show: int,
            text_column: str | None, label_column: str | None, encoding: str | None) -> None:
    """Validate DATA (an image folder or a CSV / TSV / JSONL / Parquet table); exit 1 on errors.

    With --deep, also list likely mislabelled items, near-duplicates and outliers from a backbone's
    features (exit status unchanged: they are candidates to look at, not errors)."""
    from rich.markup import escape
    from rich.table import Table

    from ..data import load_data, validate

    dataset = load_data(data, text_column=text_column, label_column=label_column, split_column=split_column,
                        encoding=encoding)
    test = load_data(test_data, text_column=text_column, label_column=label_column,
                     encoding=encoding) if test_data else None
    if deep_out and not deep:
        raise click.UsageError("--deep-out needs --deep.")
    report = validate(dataset, test=test)
    result = None
    if deep and not report.errors:
        from ..workflows.quality import deep_check, write_candidates
        from ._common import log

        result = deep_check(dataset, test=test, backbone=backbone, folds=folds, progress=not as_json,
                            log=lambda m: None if as_json else log(m))
        if deep_out:
            write_candidates(result, deep_out)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), **({"deep": result} if result is not None else {})}, indent=2))
    else:
        out.print(f"[bold]{escape(report.source)}[/bold]: {report.n_items} {report.modality}s, "
                  f"{len(report.class_counts)} classes")
        if report.class_counts:
            out.print(escape("  " + ", ".join(f"{k}: {v}" for k, v in report.class_counts.items())))
        if not report.findings:
            # with --deep the candidates below may still need a look: this verdict covers the checks above
            out.print("[green]No problems in the items, labels and splits.[/green]" if result is not None
                      else "[green]No problems found.[/green]")
        else:
            table = Table(show_header=True, header_style="bold", expand=False)
            for col in ("level", "problem", "where", "fix"):
                table.add_column(col, overflow="fold")
            for f in report.findings:
                where = "\n".join(f.where[:8]) + (f"\n… and {len(f.where) - 8} more" if len(f.where) > 8 else "")
                table.add_row(f"[{STYLE[f.level]}]{f.level}[/]", escape(f.message), escape(where), escape(f.fix))
            out.print(table)
        if deep and report.errors:
            out.print("[yellow]--deep skipped: fix the errors above first.[/]")
        if result is not None:
            _print_deep(result, show, deep_out)
        verdict = "[red]Not ready: fix the errors above.[/red]" if report.errors else "[green]Ready for `headstart fit`.[/green]"
        out.print(verdict)
    if report.errors:
        raise SystemExit(1)


KIND_TITLES = {"label-issue": "Likely mislabelled", "near-duplicate": "Near-duplicates",
               "near-duplicate-test": "Near-duplicates of test items (leakage)", "outlier": "Outliers"}


def _print_deep(result: dict, show: int, deep_out: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    counts, n = result["counts"], result["n_items"]
    out.print(f"[bold]Deep check[/bold] ({result['backbone']} features, {result['seconds']['total']:.1f} s): "
              + ", ".join(f"{v} {KIND_TITLES[k].lower()}" for k, v in counts.items()))
    for kind, title in KIND_TITLES.items():
        rows = [r for r in result["candidates"] if r["kind"] == kind]
        if not rows or not show:
            continue
        table = Table("item", "label", "suggested" if kind == "label-issue" else "other", "score", "detail",
                      title=f"{title} ({len(rows)}{f', first {show}' if len(rows) > show else ''})", title_justify="left")
        for r in rows[:show]:
            table.add_row(escape(r["item"]), escape(str(r["label"])),
                          escape(r["suggested"] if kind == "label-issue" else r["other"]), f"{r['score']:g}",
                          escape(r["detail"]))
        out.print(table)
    if counts["label-issue"] > 0.05 * n:
        out.print(f"[yellow]{counts['label-issue']} of {n} items ({100 * counts['label-issue'] / n:.0f}%) look "
                  "mislabelled: review them before training (a few hundred labels cannot absorb many errors).[/]")
    if deep_out:
        out.print(f"Candidates written to {deep_out}")
