"""``headstart predict RUN INPUTS...``: predictions with probabilities, streamed to CSV / JSONL / JSON.

Nothing given is lost: every input gets a row (an item that cannot be predicted, such as an empty
text or an image that does not decode, gets its reason in the ``error`` column and the rest carry
on), and every file a folder scan leaves out is listed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import click

from ._common import console, data_options, log

INPUT_CHARS = 80  # texts are shortened to this in the `input` column, enough to recognise a row
DECIMALS = 4


@contextlib.contextmanager
def _sink(output: str | None) -> Iterator[IO[str]]:
    """stdout, or ``output`` written atomically: it appears only once every row was written."""
    if output is None:
        yield sys.stdout
        return
    from .._io import atomic_file

    with atomic_file(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        yield fh


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
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self.fh.write(("," if self.count else "") + "\n  " + json.dumps(row, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.fh.write("\n]\n")


def shorten(text: str, limit: int = INPUT_CHARS) -> str:
    """One line of at most ``limit`` characters (runs of whitespace, newlines included, become one space)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def read_stdin_lines(encoding: str | None) -> list[str]:
    """One text per line of standard input (a final newline does not make an extra empty text)."""
    from ..errors import DataError

    stream = sys.stdin.buffer
    if stream.isatty():
        log("Reading texts from standard input, one per line; end with Ctrl-D.")
    raw = stream.read()
    try:
        text = raw.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"Standard input line {line} is not valid {encoding or 'utf-8'}.",
                        fix="pass --encoding with the real encoding (e.g. cp1252).") from None
    except LookupError:
        raise DataError(f"--encoding '{encoding}' is not an encoding Python knows.",
                        fix="use a name such as utf-8, cp1252, latin-1, utf-16 or shift_jis.") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def gather_inputs(modality: str, inputs: Sequence[str], texts: Sequence[str], *, text_column: str | None = None,
                  label_column: str | None = None, encoding: str | None = None) -> tuple[Any, list[str]]:
    """The Dataset to predict (every input, in the order given) and the files a folder scan left out."""
    from ..data import Dataset, load_data
    from ..errors import ConfigError, DataError

    if not inputs and not texts:
        raise ConfigError("Nothing to predict.", fix='name files or folders, pass --text "...", or pipe texts into -.')
    items: list[Any] = []
    ids: list[str] = []
    labels: list[str] = []
    skipped: list[str] = []
    if modality == "image":
        if texts or "-" in inputs:
            raise ConfigError("This model classifies images; --text and - (standard input) are for text models.",
                              fix="name image files or folders.")
        if label_column:
            raise ConfigError("--label-column applies to tables; this model classifies images.")
        missing = [p for p in inputs if not Path(p).exists()]
        if missing:
            raise DataError(f"{len(missing)} input(s) not found: {', '.join(missing[:5])}"
                            + (f" and {len(missing) - 5} more." if len(missing) > 5 else "."), fix="check the paths.")
        for p in inputs:
            if Path(p).is_dir():
                found = load_data(p, labelled=False)
                items += found.items
                ids += [str(Path(p) / i) for i in found.ids]
                skipped += [f"{Path(p) / s.where} ({s.reason})" for s in found.skipped]
            else:  # named on purpose: predicted, or given a row saying why it could not be
                items.append(p)
                ids.append(p)
        return Dataset("image", items, None, ids, source="the inputs"), skipped
    for p in inputs:
        if p == "-":
            lines = read_stdin_lines(encoding)
            items += lines
            ids += [f"stdin line {k}" for k in range(1, len(lines) + 1)]
            continue
        path = Path(p)
        if not path.exists():
            raise DataError(f"'{shorten(p, 60)}' is not a file, and this text model reads texts from tables.",
                            fix='to classify a text itself, pass --text "..." (repeatable) or pipe one text per line into -.')
        if path.is_dir():
            raise DataError(f"'{p}' is a folder; a text model reads tables (CSV / TSV / JSONL / Parquet).",
                            fix="name the table file.")
        table = load_data(p, labelled=bool(label_column), text_column=text_column, label_column=label_column,
                          encoding=encoding)
        items += table.items
        ids += table.ids
        labels += table.labels or []
    items += list(texts)
    ids += [f"--text {k}" for k in range(1, len(texts) + 1)]
    if label_column and len(labels) != len(items):
        raise ConfigError("--label-column needs every input to come from a table with that column.",
                          fix="drop --text and - when passing --label-column.")
    return Dataset("text", items, labels if label_column else None, ids, source="the inputs"), skipped


def _predict_chunk(model: Any, data: Any, idx: list[int], errors: dict[int, str], batch_size: int,
                   device: str | None) -> dict[int, Any]:
    """``(probabilities, out-of-scope score, unsure)`` for the items of ``idx`` without an error; an
    image that does not decode gets its reason in ``errors`` and the others are still predicted."""
    from ..errors import DataError

    good = [i for i in idx if i not in errors]
    if not good:
        return {}

    def scored(indices: list[int]) -> list[tuple[Any, Any, Any]]:
        proba, scores, unsure = model.predict_scored(data.subset(indices), batch_size=batch_size, device=device)
        none = [None] * len(indices)
        return list(zip(proba, none if scores is None else scores, none if unsure is None else unsure))

    try:
        proba = scored(good)
    except DataError:
        if data.modality != "image":
            raise
        for i in good:  # find the culprits, then predict the rest
            try:
                data.load(i)
            except DataError as exc:
                errors[i] = f"cannot decode the image: {exc.message.split(': ', 1)[-1]}"
        good = [i for i in good if i not in errors]
        if not good:
            return {}
        proba = scored(good)
    return dict(zip(good, proba))


@click.command("predict", epilog="""\b
Examples:
  headstart predict runs/photos new/*.jpg              # CSV to standard output
  headstart predict runs/photos incoming/ -o preds.jsonl --batch-size 128
  headstart predict runs/tickets new.csv --text-column body -o preds.csv
  headstart predict runs/tickets --text "My card was charged twice" --text "App crashes on login"
  cat texts.txt | headstart predict runs/tickets -       # one text per line
Every input gets a row: `input` (the text, shortened, or the image path) and `where` (file and row)
name it; an item that cannot be predicted has its reason in `error` and the others carry on.
""")
@click.argument("run")
@click.argument("inputs", nargs=-1)
@click.option("--text", "texts", multiple=True, metavar="TEXT", help="A text to classify (repeatable), for a text model.")
@click.option("--output", "-o", default=None, help="A .csv, .jsonl or .json file (default: CSV to stdout). "
              "Written to a temporary file and renamed when complete.")
@data_options
@click.option("--batch-size", default=64, show_default=True, help="Items per forward pass.")
@click.option("--chunk-size", default=1024, show_default=True, help="Items decoded and held in memory at a time.")
@click.option("--device", default=None)
@click.option("--abstain", is_flag=True, help="Predict 'unknown' for inputs unlike the training data (unsure = true) "
              "instead of their most likely class.")
def command(run: str, inputs: tuple[str, ...], texts: tuple[str, ...], output: str | None, text_column: str | None,
            label_column: str | None, encoding: str | None, batch_size: int, chunk_size: int, device: str | None,
            abstain: bool) -> None:
    """Predict the class of each input: image files or folders, text tables, --text, or - for standard input."""
    from ..api import load
    from ..errors import ConfigError
    from ..progress import progress_bar

    fmt = "csv" if output is None else Path(output).suffix.lower().lstrip(".")
    if fmt not in ("csv", "jsonl", "json"):
        raise ConfigError(f"--output must end in .csv, .jsonl or .json, got '{output}'.")
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"--batch-size and --chunk-size must be >= 1, got {batch_size} and {chunk_size}.")
    model = load(run)
    data, skipped = gather_inputs(model.modality, inputs, texts, text_column=text_column, label_column=label_column,
                                  encoding=encoding)
    if skipped:
        log(f"Skipped {len(skipped)} file(s) that are not images: " + ", ".join(skipped[:10])
            + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""))
    names = model.label_names
    fields = ["where", "input", *(["label"] if data.labels is not None else []), "prediction", "confidence",
              "unsure", "ood_score", *(f"p_{n}" for n in names), "error"]
    if abstain and model.ood is None:
        raise ConfigError(f"--abstain needs an out-of-scope score, and the model in {run} was saved without one.",
                          fix="re-fit the model with this version of headstart, or drop --abstain.")
    n_errors = n_unsure = 0
    with _sink(output) as fh, progress_bar("Predicting", total=len(data)) as advance:
        writer = RowWriter(fh, fmt, fields)
        for start in range(0, len(data), chunk_size):
            idx = list(range(start, min(start + chunk_size, len(data))))
            errors = {i: "empty or whitespace-only text" for i in idx
                      if data.modality == "text" and not data.items[i].strip()}
            proba = _predict_chunk(model, data, idx, errors, batch_size, device)
            for i in idx:
                item = data.items[i]
                row: dict[str, Any] = {"where": data.ids[i], "input": shorten(item) if data.modality == "text" else item}
                if data.labels is not None:
                    row["label"] = data.labels[i]
                p, score, unsure = proba.get(i, (None, None, None))
                row["prediction"] = None if p is None else names[int(p.argmax())]
                if abstain and unsure:
                    row["prediction"] = "unknown"
                row["confidence"] = None if p is None else round(float(p.max()), DECIMALS)
                row["unsure"] = None if unsure is None else bool(unsure)
                row["ood_score"] = None if score is None else round(float(score), DECIMALS)
                n_unsure += bool(unsure)
                row.update({f"p_{n}": None if p is None else round(float(p[k]), DECIMALS) for k, n in enumerate(names)})
                row["error"] = errors.get(i)
                n_errors += i in errors
                writer.write(row)
            advance(len(idx))
        writer.close()
    where = f" written to {output}" if output else ""
    console.print(f"{writer.count} row(s){where}: {writer.count - n_errors} prediction(s)"
                  + (f", [yellow]{n_errors} with an error (see the error column)[/yellow]" if n_errors else "")
                  + (f", {n_unsure} unsure (unlike the training data; see the unsure column)" if n_unsure else "")
                  + (f"; {len(skipped)} file(s) skipped" if skipped else "") + ".")
