"""``headstart gap SOURCE TARGET``: how far apart two data sets are, in the backbone's eyes."""

from __future__ import annotations

import click

from ..domain.gap import MIN_PERMUTATIONS
from ..domain.label_shift import MIN_BOOTSTRAP, SHIFT_ESTIMATORS
from ._common import data_options, log, out


def _bootstrap(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if 0 < value < MIN_BOOTSTRAP:
        raise click.BadParameter(f"{value} resamples give no percentile interval; use 0 (no intervals) or at least "
                                 f"{MIN_BOOTSTRAP}, e.g. 200.")
    return value


@click.command("gap", epilog="""\b
Examples:
  headstart gap studio_photos/ shop_photos/ --out runs/gap
  headstart gap builtin:mnist builtin:digits --backbone efficientnet-lite0 --out runs/mnist-digits
  headstart gap tickets_2024.csv tickets_2025.csv --backbone minilm-l6 --estimator bbse
With source labels it also estimates the target's class proportions (no target labels needed)
and says whether the shift is in the labels, the inputs, or both.
Writes gap.json, gap.md and gap.png (a t-SNE of both sets) to --out.
""")
@click.argument("source")
@click.argument("target")
@click.option("--backbone", "-b", default=None, help="Backbone whose features are compared (default by modality).")
@click.option("--out", "-o", "out_dir", default=None, help="Folder for gap.json, gap.md and the plot gap.png.")
@click.option("--permutations", default=200, show_default=True, type=click.IntRange(min=MIN_PERMUTATIONS),
              help=f"Permutations of the MMD test, at least {MIN_PERMUTATIONS}: its p-value is at least "
                   f"1 / (permutations + 1), so with fewer it could never reach 0.05.")
@click.option("--estimator", type=click.Choice(SHIFT_ESTIMATORS.names()), default="em", show_default=True,
              help="How the target's class proportions are estimated without its labels (needs source labels).")
@click.option("--bootstrap", default=200, show_default=True, type=click.IntRange(min=0), callback=_bootstrap,
              help=f"Bootstrap resamples for the intervals of the proportions: 0 = none, else at least "
                   f"{MIN_BOOTSTRAP}.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: a GPU when there is one).")
@click.option("--cache-dir", default=None, help="Feature cache folder.")
@data_options
def command(source: str, target: str, backbone: str | None, out_dir: str | None, permutations: int, estimator: str,
            bootstrap: int, seed: int,
            device: str | None, cache_dir: str | None, text_column: str | None, label_column: str | None,
            encoding: str | None) -> None:
    """Measure the domain gap between SOURCE and TARGET: MMD test, proxy A-distance, per-class shift,
    and the target's class proportions (label shift) with intervals."""
    from rich.markup import escape

    from ..data import load_data
    from ..workflows.gap import basis_words, gap, left_out_words

    # Labels are optional on both sides (they add the per-class shift); the flags apply to both tables.
    source_data, target_data = (load_data(d, text_column=text_column, label_column=label_column, encoding=encoding,
                                          labelled=None) for d in (source, target))
    result = gap(source_data, target_data, backbone=backbone, out=out_dir, permutations=permutations, seed=seed,
                 device=device, cache_dir=cache_dir, estimator=estimator, bootstrap=bootstrap, log=log)
    m, pad = result["mmd"], result["proxy_a_distance"]
    out.print(f"[bold]MMD²[/bold] {m['mmd2']:.4f} (permutation p = {m['p_value']:.3f}, {m['permutations']} permutations)")
    out.print(f"[bold]Proxy A-distance[/bold] {pad['pad']:.2f} of 2 (domain classifier accuracy "
              f"{100 * pad['domain_classifier_accuracy']:.1f}%)")
    for row in result.get("per_class", [])[:20]:
        out.print(f"  class {row['class']}: MMD² {row['mmd2']:.4f}, share {100 * row['source_share']:.0f}% -> "
                  f"{100 * row['target_share']:.0f}%")
    if result.get("per_class_left_out"):
        out.print(f"  left out (a class needs 2 items a side): {escape(left_out_words(result['per_class_left_out']))}")
    if result.get("unseen_classes"):
        out.print(f"[bold yellow]Warning[/bold yellow]: {escape(result['unseen_classes']['warning'])}.")
    out.print(f"[bold]Verdict[/bold]: {escape(result['verdict'])}")
    shift = result.get("label_shift")
    if shift:
        if shift.get("target") is not None:
            interval = shift.get("interval")
            none = "no intervals, --bootstrap 0" if not shift.get("bootstrap") else shift.get("interval_note", "")
            out.print(f"[bold]Class proportions[/bold] (target estimated by {shift['estimator']}, "
                      + (f"{round(100 * shift['level'])}% intervals" if interval else escape(none)) + "):")
            for i, c in enumerate(shift["classes"][:20]):
                span = f" [{100 * interval[i][0]:.0f}-{100 * interval[i][1]:.0f}%]" if interval else ""
                out.print(f"  {c}: source {100 * shift['source_proportions'][i]:.0f}% -> target "
                          f"{100 * shift['target'][i]:.0f}%{span}")
            out.print(f"  {escape(basis_words(shift))}")
        out.print(f"[bold]Shift[/bold]: {escape(shift['in_words'])}")
    if out_dir:
        out.print(f"Report and plot: {out_dir}/ (gap.json, gap.md, gap.png)")
