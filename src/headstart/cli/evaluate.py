"""``headstart eval RUN DATA``: score a saved model on labelled data."""

from __future__ import annotations


import click

from ._common import data_options, out


@click.command("eval", epilog="""\b
Examples:
  headstart eval runs/photos new_photos/
  headstart eval runs/tickets march.csv --json scores.json
  headstart eval runs/tickets march.csv --group-column region       # scores per region, the largest gap
  headstart eval runs/photos new_photos/ --group-column site --groups sites.csv   # folders: path,site
""")
@click.argument("run")
@click.argument("data")
@click.option("--json", "json_path", default=None, help="Also write all metrics to this JSON file.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--device", default=None)
@click.option("--group-column", default=None, metavar="COL",
              help="Also score each group of this column separately (accuracy, macro-F1, ECE, n), with the largest "
                   "gap and its bootstrap interval; for two classes also the demographic-parity and equalized-odds "
                   "differences.")
@click.option("--groups", "groups_file", default=None, metavar="FILE",
              help="For an image folder: a CSV with columns path (as in the folder, e.g. cat/003.jpg) and COL.")
@data_options
def command(run: str, data: str, json_path: str | None, batch_size: int, device: str | None,
            group_column: str | None, groups_file: str | None,
            text_column: str | None, label_column: str | None, encoding: str | None) -> None:
    """Accuracy, macro-F1, ECE, per-class scores and confusion matrix of RUN on DATA."""
    from rich.table import Table

    from .._io import write_json_atomic
    from ..api import evaluate, load
    from ..data import load_data
    from ..evaluation.intervals import interval_words

    if groups_file and not group_column:
        raise click.UsageError("--groups needs --group-column (the column of FILE that names each group).")
    model = load(run)
    dataset = load_data(data, text_column=text_column, label_column=label_column, encoding=encoding)
    groups = None
    if group_column:
        from ..workflows.quality import read_groups

        groups = read_groups(dataset, data, column=group_column, mapping=groups_file, encoding=encoding)
    if groups is None:
        metrics = evaluate(model, dataset, batch_size=batch_size, device=device)
    else:  # the same scores and the slices from one pass over the data
        from ..workflows.quality import slice_report

        metrics = slice_report(model, dataset, groups, batch_size=batch_size, device=device)
        metrics["slices"]["column"] = group_column
    ci = metrics.get("ci95", {})
    span = lambda key: f" ({100 * ci[key][0]:.1f}-{100 * ci[key][1]:.1f})" if key in ci else ""  # noqa: E731
    out.print(f"[bold]{data}[/bold] (n = {metrics['n']}): accuracy {100 * metrics['accuracy']:.1f}%{span('accuracy')}, "
              f"macro-F1 {100 * metrics['macro_f1']:.1f}%{span('macro_f1')}, ECE {metrics['ece']:.3f}  "
              "(95% intervals)")
    small = interval_words(metrics["n"], ci["accuracy"]) if "accuracy" in ci else None
    if small:
        out.print(f"[yellow]{small}[/]")
    table = Table("class", "precision", "recall", "F1", "support")
    for name, s in metrics["per_class"].items():
        table.add_row(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
    out.print(table)
    names = model.label_names
    cm = Table("true \\ predicted", *names, title="Confusion matrix")
    for name, row in zip(names, metrics["confusion_matrix"]):
        cm.add_row(name, *[str(v) for v in row])
    out.print(cm)
    if groups is not None:
        _print_slices(metrics["slices"], group_column)
    if json_path:
        write_json_atomic(json_path, metrics)
        click.echo(f"Metrics written to {json_path}")


def _print_slices(slices: dict, column: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(column, "n", "accuracy (95%)", "macro-F1", "ECE", "behind the rest", title=f"Per {column}",
                  title_justify="left")
    for r in slices["groups"]:
        lo, hi = r["accuracy_ci95"]
        mark = " [red]![/]" if r["falls_behind"] else ""
        table.add_row(escape(r["group"]), str(r["n"]), f"{100 * r['accuracy']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})",
                      f"{100 * r['macro_f1']:.1f}%", f"{r['ece']:.3f}", f"{100 * r['behind_rest']:+.1f} pts{mark}")
    out.print(table)
    gap = slices["gap"]
    out.print(f"Largest accuracy gap: {100 * gap['value']:.1f} points ({escape(gap['best'])} vs {escape(gap['worst'])}; "
              f"95% bootstrap interval {100 * gap['ci95'][0]:.1f} to {100 * gap['ci95'][1]:.1f})")
    if "binary" in slices:
        b = slices["binary"]
        out.print(f"Positive class '{escape(b['positive'])}': demographic-parity difference "
                  f"{b['demographic_parity_difference']:.3f}, equalized-odds difference {b['equalized_odds_difference']:.3f}")
    for w in slices["warnings"]:
        out.print(f"[yellow]{escape(w)}[/]")
