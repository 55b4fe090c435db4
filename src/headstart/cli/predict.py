"""``headstart predict RUN INPUTS...``: predictions with probabilities, streamed to CSV / JSONL / JSON."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from ._common import console


@contextlib.contextmanager
def _sink(output: str | None) -> Iterator[IO[str]]:
    """stdout, or a temporary file renamed over ``output`` only when everything was written."""
    if output is None:
        yield sys.stdout
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class RowWriter:
    """Writes prediction rows as CSV, JSON Lines or one JSON array, one row at a time."""

    def __init__(self, fh: IO[str], fmt: str, fields: list[str]) -> None:
        self.fh, self.fmt, self.count = fh, fmt, 0
        if fmt == "csv":
            self.csv = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
            self.csv.writeheader()
        elif fmt == "json":
            fh.write("[")

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self.csv.writerow(row)
        elif self.fmt == "jsonl":
            self.fh.write(json.dumps(row) + "\n")
        else:
            self.fh.write(("," if self.count else "") + "\n  " + json.dumps(row))
        self.count += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.fh.write("\n]\n")


@click.command("predict", epilog="""\b
Examples:
  headstart predict runs/photos new/*.jpg              # CSV to standard output
  headstart predict runs/photos incoming/ -o preds.jsonl --batch-size 128
  headstart predict runs/tickets new.csv --text-column body -o preds.csv
""")
@click.argument("run")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", default=None, help="A .csv, .jsonl or .json file (default: CSV to stdout). "
              "Written to a temporary file and renamed when complete.")
@click.option("--text-column", default=None, help="Text column when INPUTS is a table.")
@click.option("--batch-size", default=64, show_default=True, help="Items per forward pass.")
@click.option("--chunk-size", default=1024, show_default=True, help="Items decoded and held in memory at a time.")
@click.option("--device", default=None)
def command(run: str, inputs: tuple[str, ...], output: str | None, text_column: str | None, batch_size: int,
            chunk_size: int, device: str | None) -> None:
    """Predict the class of each input (image files, an image folder, or a text table), streaming."""
    from ..api import load
    from ..data import Dataset, load_data
    from ..errors import ConfigError, DataError
    from ..progress import progress_bar

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
    fmt = "csv" if output is None else Path(output).suffix.lower().lstrip(".")
    if fmt not in ("csv", "jsonl", "json"):
        raise ConfigError(f"--output must end in .csv, .jsonl or .json, got '{output}'.")
    fields = ["input", "prediction", "confidence", *(f"p_{n}" for n in model.label_names)]
    with _sink(output) as fh, progress_bar("Predicting", total=len(data)) as advance:
        writer = RowWriter(fh, fmt, fields)
        for idx, proba in model.iter_predict_proba(data, chunk_size=chunk_size, batch_size=batch_size, device=device):
            for i, p in zip(idx, proba):
                writer.write({"input": data.ids[i], "prediction": model.label_names[int(p.argmax())],
                              "confidence": float(p.max()),
                              **{f"p_{name}": float(v) for name, v in zip(model.label_names, p)}})
            advance(len(idx))
        writer.close()
    if output:
        console.print(f"{writer.count} predictions written to {output}")
