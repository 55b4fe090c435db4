"""``headstart predict RUN INPUTS...``: predictions with probabilities to CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click

from ._common import console


@click.command("predict", epilog="""\b
Examples:
  headstart predict runs/photos new/*.jpg              # CSV to standard output
  headstart predict runs/photos incoming/ -o preds.json
  headstart predict runs/tickets new.csv --text-column body -o preds.csv
""")
@click.argument("run")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", default=None, help="Write to this .csv or .json file (default: CSV to stdout).")
@click.option("--text-column", default=None, help="Text column when INPUTS is a table.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--device", default=None)
def command(run: str, inputs: tuple[str, ...], output: str | None, text_column: str | None, batch_size: int,
            device: str | None) -> None:
    """Predict the class of each input: image files, an image folder, or a text table."""
    from ..api import load
    from ..data import Dataset, load_data
    from ..errors import DataError

    model = load(run)
    if len(inputs) == 1 and Path(inputs[0]).exists() and (Path(inputs[0]).is_dir() or model.modality == "text"):
        data = load_data(inputs[0], labelled=False, text_column=text_column)
    else:
        missing = [p for p in inputs if not Path(p).is_file()]
        if missing:
            raise DataError(f"Input file(s) not found: {', '.join(missing[:5])}.", fix="check the paths.")
        if model.modality != "image":
            raise DataError("A text model takes one table file (CSV / TSV / JSONL / Parquet).",
                            fix="put the texts in a table with a text column.")
        data = Dataset("image", list(inputs), None, list(inputs), source="command line")
    proba = model.predict_proba(data, batch_size=batch_size, device=device, progress=True)
    rows = [{"input": data.ids[i], "prediction": model.label_names[int(p.argmax())], "confidence": float(p.max()),
             **{f"p_{name}": float(v) for name, v in zip(model.label_names, p)}} for i, p in enumerate(proba)]
    if output and output.endswith(".json"):
        text = json.dumps(rows, indent=2)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    if output:
        from .._io import write_text_atomic

        write_text_atomic(output, text)
        console.print(f"{len(rows)} predictions written to {output}")
    else:
        sys.stdout.write(text)
