"""``headstart export RUN``: ONNX export (fp32, int8, an edge bundle), accepted only after a parity check."""

from __future__ import annotations

import click

from ..export.edge import TARGETS
from ..export.quantize import CALIBRATION_METHODS, QAT_EPOCHS, QUANTIZE
from ._common import log, out


def held_out_items(run: str, data: str | None, limit: int) -> tuple[list, list | None]:  # type: ignore[type-arg]
    """Raw inputs (and labels when known) for the parity check: --data, else the test split of the
    data the run was fitted on."""
    from ..data import load_data
    from ..export.onnx import run_items

    if data is None:
        return run_items(run, "test", limit)
    dataset = load_data(data, labelled=None)
    n = min(limit, len(dataset))
    return [dataset.load(i) for i in range(n)], (list(dataset.labels[:n]) if dataset.labels is not None else None)


@click.command("export", epilog="""\b
Examples:
  headstart export runs/photos                       # fp32 ONNX, parity-checked on the run's test split
  headstart export runs/photos --quantize int8       # + int8, calibrated on the run's training images
  headstart export runs/photos --quantize int8 --target edge   # + RUN/onnx/edge/: model, JSON, predict.py
  headstart export runs/digits --quantize int8-qat   # int8, then quantisation-aware tuning of its weights
  headstart export runs/tickets --quantize int8 --data sample.csv
""")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--quantize", type=click.Choice(QUANTIZE), default=None,
              help="Also write an int8 model (checked too); int8-qat (images) then tunes the int8 model's "
                   "weights on a simulation of it, towards the fp32 model.")
@click.option("--target", type=click.Choice(TARGETS), default="onnx", show_default=True,
              help="edge: also write RUN/onnx/edge/ with one model (int8 with --quantize), labels and "
                   "preprocessing as JSON, and a predict.py that needs only onnxruntime, numpy and Pillow.")
@click.option("--data", default=None, help="Held-out inputs for the parity check (default: the run's test split).")
@click.option("--n", "limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="How many inputs the parity check uses.")
@click.option("--calibration", default=None,
              help="Images that calibrate int8 activation ranges (default: the run's training split).")
@click.option("--calibration-n", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="How many calibration images to use.")
@click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS), default="minmax",
              show_default=True, help="How activation ranges are set from the calibration images.")
@click.option("--qat-epochs", type=click.IntRange(1, 1000), default=None,
              help=f"Epochs of --quantize int8-qat tuning (default {QAT_EPOCHS}).")
def command(run: str, fmt: str, quantize: str | None, target: str, data: str | None, limit: int,
            calibration: str | None, calibration_n: int, calibration_method: str, qat_epochs: int | None) -> None:
    """Export RUN's whole predictor to RUN/onnx/, compare it with torch, report speed."""
    from rich.table import Table

    from ..data import load_data
    from ..export.onnx import export_onnx

    items, labels = held_out_items(run, data, limit)
    calib = load_data(calibration, labelled=None) if calibration else None
    report = export_onnx(run, items, labels=labels, quantize=quantize, calibration=calib,
                         calibration_method=calibration_method, calibration_n=calibration_n, target=target,
                         qat_epochs=qat_epochs, log=log)
    table = Table("variant", "max |Δp|", "top-1 agreement", "accuracy", "allowed |Δp|", "batch 1 ms",
                  "batch 32 items/s")
    for variant, p in report["parity"].items():
        tol = report["tolerances"][variant]
        acc = f"{p['accuracy']:.3f}" if "accuracy" in p else "-"
        table.add_row(variant, f"{p['max_abs_diff']:.2e}", f"{p['top1_agreement']:.3f}", acc, f"{tol['max_abs_diff']:g}",
                      f"{report['speed']['batch_1'][variant]['latency_ms']:.1f}",
                      f"{report['speed']['batch_32'][variant]['items_per_s']:.1f}")
    acc = next((f"{p['accuracy_torch']:.3f}" for p in report["parity"].values() if "accuracy_torch" in p), "-")
    table.add_row("torch", "-", "-", acc, "-", f"{report['speed']['batch_1']['torch']['latency_ms']:.1f}",
                  f"{report['speed']['batch_32']['torch']['items_per_s']:.1f}")
    out.print(table)
    q = report.get("quantization", {})
    if q.get("fp32_layers"):
        out.print(f"int8: {len(q['fp32_layers'])} of {q['conv_layers']} convolutions kept in fp32 by the sensitivity sweep.")
    out.print(f"[green]Parity checks passed.[/green] Exported to {run}/onnx/ ({', '.join(report['files'].values())})")
    if "edge" in report:
        out.print(f"Edge bundle ({report['edge']['variant']}): {run}/onnx/edge/ — copy it to the device and run "
                  "`python predict.py FILE...` (pip install onnxruntime numpy pillow"
                  f"{' tokenizers' if report['modality'] == 'text' else ''}).")
