"""``headstart export RUN``: ONNX export, accepted only after a parity check."""

from __future__ import annotations

import click

from ._common import log, out


def held_out_items(run: str, data: str | None, limit: int) -> list:  # type: ignore[type-arg]
    """Raw inputs for the parity check: --data, else the test split of the data the run was fitted on."""
    from ..data import load_data, split
    from ..errors import ConfigError
    from ..artifact import read_meta

    meta = read_meta(run)
    if data is None:
        source = meta.get("data", {}).get("source", "")
        try:
            dataset = split(load_data(source), seed=int(meta.get("seed", 0))).test
        except Exception:
            raise ConfigError(f"The run's training data ({source or 'unknown'}) cannot be read here for the parity check.",
                              fix="pass --data with a folder or table of a few dozen examples.") from None
    else:
        dataset = load_data(data, labelled=False)
    return [dataset.load(i) for i in range(min(limit, len(dataset)))]


@click.command("export", epilog="""\b
Examples:
  headstart export runs/photos                       # fp32 ONNX, parity-checked on the run's test split
  headstart export runs/tickets --quantize int8 --data sample.csv
""")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--quantize", type=click.Choice(["int8"]), default=None, help="Also write an int8 model (checked too).")
@click.option("--data", default=None, help="Held-out inputs for the parity check (default: the run's test split).")
@click.option("--n", "limit", default=64, show_default=True, help="How many inputs the parity check uses.")
def command(run: str, fmt: str, quantize: str | None, data: str | None, limit: int) -> None:
    """Export RUN's whole predictor to RUN/onnx/, compare it with torch, report speed."""
    from rich.table import Table

    from ..export.onnx import export_onnx

    report = export_onnx(run, held_out_items(run, data, limit), quantize=quantize, log=log)
    table = Table("variant", "max |Δp|", "top-1 agreement", "allowed |Δp|", "batch 1 ms", "batch 32 items/s")
    for variant, p in report["parity"].items():
        tol = report["tolerances"][variant]
        table.add_row(variant, f"{p['max_abs_diff']:.2e}", f"{p['top1_agreement']:.3f}", f"{tol['max_abs_diff']:g}",
                      f"{report['speed']['batch_1'][variant]['latency_ms']:.1f}",
                      f"{report['speed']['batch_32'][variant]['items_per_s']:.1f}")
    table.add_row("torch", "-", "-", "-", f"{report['speed']['batch_1']['torch']['latency_ms']:.1f}",
                  f"{report['speed']['batch_32']['torch']['items_per_s']:.1f}")
    out.print(table)
    out.print(f"[green]Parity checks passed.[/green] Exported to {run}/onnx/ ({', '.join(report['files'].values())})")
