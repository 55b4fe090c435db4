"""``headstart fit DATA``: train a transfer model and save it with its transfer card."""

from __future__ import annotations

import shlex
import sys

import click

from ._common import data_options, log, out


def print_summary(model, out_dir: str | None) -> None:  # type: ignore[no-untyped-def]
    from ..report.card import gain_sentence

    m = model.info["metrics"]
    test = m["test"]
    out.print(f"\n[bold]Test accuracy[/bold] {100 * test['accuracy']:.1f}%   macro-F1 {100 * test['macro_f1']:.1f}%   "
              f"ECE {test['ece']:.3f}   (n = {test['n']})")
    if "baseline" in m:
        b = m["baseline"]
        out.print(f"[bold]Baseline[/bold] ({b['name']}) {100 * b['test']['accuracy']:.1f}%")
        gain = m["transfer_gain"]["accuracy"]
        out.print(f"[{'red' if gain < 0 else 'green'}]{gain_sentence(gain, 'baseline')}[/]")
    if out_dir:
        out.print(f"Model and transfer card: {out_dir}/ (headstart.json, model.safetensors, transfer_card.md)")


@click.command("fit", epilog="""\b
Examples:
  headstart fit photos/ --out runs/photos                       # efficientnet-lite0 linear probe
  headstart fit tickets.csv --backbone minilm-l6 --out runs/t --head mlp
  headstart fit builtin:mnist:100 --image-size 160 --out runs/mnist
  headstart fit data.csv --backbone hf:/models/my-bert --out runs/b
""")
@click.argument("data")
@click.option("--backbone", "-b", default=None, help="Backbone name (see `headstart backbones`), hf:ID or timm:NAME. "
              "Default: efficientnet-lite0 for images, minilm-l6 for text.")
@click.option("--strategy", "-s", default="linear-probe", show_default=True, help="Adaptation strategy.")
@click.option("--head", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="Linear-probe head.")
@click.option("--out", "-o", "out_dir", default=None, help="Folder to save the model in (replaced atomically).")
@click.option("--val", default=0.15, show_default=True, help="Validation fraction (for choosing hyper-parameters).")
@click.option("--test", default=0.2, show_default=True, help="Test fraction (for the reported scores).")
@click.option("--seed", default=0, show_default=True, help="Seed of the split and of training.")
@click.option("--image-size", type=int, default=None, help="Override the backbone's input size (pixels).")
@click.option("--max-length", type=int, default=None, help="Override the backbone's maximum tokens per text.")
@click.option("--split-column", default=None, help="Column naming train / val / test per row.")
@click.option("--batch-size", default=64, show_default=True, help="Batch size for feature extraction.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when there is one).")
@click.option("--cache-dir", default=None, help="Feature cache folder (default: ~/.cache/headstart, or $HEADSTART_CACHE).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")
@click.option("--no-baseline", is_flag=True, help="Skip the no-transfer baseline.")
@data_options
def command(data: str, backbone: str | None, strategy: str, head: str, out_dir: str | None, val: float, test: float,
            seed: int, image_size: int | None, max_length: int | None, split_column: str | None, batch_size: int,
            device: str | None, cache_dir: str | None, no_cache: bool, no_baseline: bool, text_column: str | None,
            label_column: str | None) -> None:
    """Validate DATA, extract features, adapt the backbone, evaluate against a baseline, save."""
    from ..api import fit

    options = {"head": head} if strategy == "linear-probe" else {}
    model = fit(data, backbone=backbone, strategy=strategy, out=out_dir, val=val, test=test, seed=seed,
                image_size=image_size, max_length=max_length, cache_dir=cache_dir, use_cache=not no_cache,
                device=device, batch_size=batch_size, baseline=not no_baseline, options=options,
                text_column=text_column, label_column=label_column, split_column=split_column, log=log,
                command="headstart " + shlex.join(sys.argv[1:]))
    print_summary(model, out_dir)
