"""``headstart eval RUN DATA``: score a saved model on labelled data."""

from __future__ import annotations


import click

from ._common import data_options, out


@click.command("eval", epilog="""\b
Examples:
  headstart eval runs/photos new_photos/
  headstart eval runs/tickets march.csv --json scores.json
""")
@click.argument("run")
@click.argument("data")
@click.option("--json", "json_path", default=None, help="Also write all metrics to this JSON file.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--device", default=None)
@data_options
def command(run: str, data: str, json_path: str | None, batch_size: int, device: str | None,
            text_column: str | None, label_column: str | None, encoding: str | None) -> None:
    """Accuracy, macro-F1, ECE, per-class scores and confusion matrix of RUN on DATA."""
    from rich.table import Table

    from .._io import write_json_atomic
    from ..api import evaluate, load
    from ..data import load_data
    from ..evaluation.intervals import interval_words

    model = load(run)
    dataset = load_data(data, text_column=text_column, label_column=label_column, encoding=encoding)
    metrics = evaluate(model, dataset, batch_size=batch_size, device=device)
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
    if json_path:
        write_json_atomic(json_path, metrics)
        click.echo(f"Metrics written to {json_path}")
