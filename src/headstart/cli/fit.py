"""``headstart fit DATA``: train a transfer model and save it with its transfer card."""

from __future__ import annotations

import os
import shlex
import sys

import click

from ._common import RegistryChoice, RegistryHelpOption, data_options, log, out


def print_summary(model, out_dir: str | None) -> None:  # type: ignore[no-untyped-def]
    from ..evaluation.intervals import gain_words, interval_words
    from ..report.card import gain_sentence

    m = model.info["metrics"]
    test = m["test"]
    ci = test.get("ci95", {}).get("accuracy")
    out.print(f"\n[bold]Test accuracy[/bold] {100 * test['accuracy']:.1f}%"
              + (f" (95% interval {100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")
              + f"   macro-F1 {100 * test['macro_f1']:.1f}%   ECE {test['ece']:.3f}   (n = {test['n']})")
    if model.info.get("strategy", {}).get("details", {}).get("test_scored_without_prior_correction"):
        out.print("  (the source's test split, scored without the correction to the target's class proportions "
                  "that the saved model applies)")
    if ci and interval_words(test["n"], ci):  # the fit's log gave the full warning; a pointer here
        out.print(f"[yellow]Only {test['n']} test items: treat this accuracy as a rough guide (see the warning "
                  "above).[/]")
    if "baseline" in m:
        b = m["baseline"]
        out.print(f"[bold]Baseline[/bold] ({b['name']}) {100 * b['test']['accuracy']:.1f}%")
        gain = m["transfer_gain"]["accuracy"]
        interval = m["transfer_gain"].get("ci95", {}).get("accuracy")
        real_loss = gain < 0 and (interval is None or interval[1] < 0)
        out.print(f"[{'red' if real_loss else 'green' if gain >= 0 else 'yellow'}]"
                  f"{gain_sentence(gain, b['name'], interval)}[/]")
        if "ci95" in m["transfer_gain"]:
            out.print(f"  {gain_words(gain, m['transfer_gain']['ci95']['accuracy'])}")
    if "target" in m:
        out.print(f"[bold]Target-domain accuracy[/bold] {100 * m['target']['accuracy']:.1f}% "
                  f"(n = {m['target']['n']}; the target labels also guarded the choice, so this is optimistic)")
    strategy = model.info.get("strategy", {})
    if strategy.get("type") in ("domain-adapt", "auto"):
        for r in strategy.get("reasons", []):
            out.print(f"- {r}")
    warnings = list(strategy.get("details", {}).get("warnings", [])) + list(m.get("baseline", {}).get("warnings", []))
    for w in dict.fromkeys(warnings):  # the baseline repeats the probe's edge-of-grid warning
        if "`Cs`" in w and strategy.get("type") != "linear-probe":  # e.g. auto, which has no Cs option
            w += (" `Cs` is an option of the probe: --strategy linear-probe "
                  "--option Cs=1e-4,1e-3,0.01,0.1,1,10,100,1e3,1e4,1e5,1e6.")
        out.print(f"[yellow]Warning: {w}[/]")
    cal = model.info.get("calibration")
    if cal and "test_ece_before" in cal:
        before, after = cal["test_ece_before"], cal["test_ece_after"]
        if cal["kept"]:
            said = (f"Confidence: temperature {cal['temperature']:.3g} applied; test calibration error (ECE) "
                    f"{before:.3f} -> {after:.3f}")
            if after > before + 1e-9:  # fitted on validation, it can miss on test: say so, do not hide it
                n_val = model.info.get("data", {}).get("splits", {}).get("val", "?")
                said += f" (worse on the test split than without it; it was fitted on {n_val} validation items)"
        else:
            said = f"Confidence: the model's own (no temperature lowered the validation log-loss); test ECE {before:.3f}"
        out.print(said)
    if out_dir:
        out.print(f"Model and transfer card: {out_dir}/ (headstart.json, model.safetensors, transfer_card.md)")


def default_out_dir(data: str, strategy: str) -> str:
    """``runs/<data>-<strategy>-<time>``: a new folder per run, named so that a listing reads well."""
    import re
    import time
    from pathlib import Path

    stem = Path(data.rstrip("/")).stem if not data.startswith("builtin:") else data.split(":")[1]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "data"
    return f"runs/{stem}-{strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


def parse_options(strategy: str, pairs: tuple[str, ...]) -> dict[str, object]:
    """KEY=VALUE strings -> typed values, by the annotations of the strategy's config."""
    from ..methods import STRATEGIES
    from ..options import parse_pairs

    return parse_pairs(STRATEGIES.get(strategy).config_class, pairs, strategy=strategy)


def strategy_names() -> list[str]:
    """Every registered strategy (``--strategy``)."""
    from ..methods import STRATEGIES

    return STRATEGIES.names()


def adapt_choices() -> list[str]:
    """``--adapt``: ``auto``, ``source-only``, every registered aligner and ``self-train``."""
    from ..domain.losses import ALIGNERS
    from ..methods.domain_adapt import SELF_TRAIN, SOURCE_ONLY

    return ["auto", SOURCE_ONLY, *ALIGNERS.names(), SELF_TRAIN]


@click.command("fit", epilog="""\b
Examples:
  headstart fit photos/ --out runs/photos                       # efficientnet-lite0 linear probe
  headstart fit tickets.csv --backbone minilm-l6 --out runs/t --head mlp
  headstart fit builtin:mnist:100 --image-size 160 --out runs/mnist
  headstart fit data.csv --backbone hf:/models/my-bert --out runs/b
  headstart fit tickets.csv --strategy lp-ft --epochs 4 --out runs/t   # fine-tune (also: full, partial, gradual, lora)
  headstart fit tickets.csv --strategy lora --option r=16 --out runs/t --resume
  headstart fit photos/ --strategy auto --budget 10m --out runs/p              # picks, and says why
  headstart fit studio/ --target shop_photos/ --adapt auto --out runs/shop     # domain adaptation
  headstart fit builtin:mnist --target builtin:digits --adapt mcc --option seeds=3
  headstart fit tickets.csv --unlabelled more_tickets.csv --strategy auto --budget 10m   # + pseudo-labels
""")
@click.argument("data")
@click.option("--backbone", "-b", default=None, help="Backbone name (see `headstart backbones`), hf:ID or timm:NAME. "
              "Default: efficientnet-lite0 for images, minilm-l6 for text; 'auto' ranks the "
              "available ones by LogME on the training split and takes the best.")
@click.option("--strategy", "-s", default="linear-probe", show_default=True, cls=RegistryHelpOption,
              help_from=lambda: "Adaptation strategy: " + ", ".join(strategy_names()) + ".")
@click.option("--head", type=click.Choice(["linear", "mlp"]), default=None, help="Linear-probe head (default linear).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Fine-tuning epochs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Fine-tuning learning rate of the backbone.")
@click.option("--option", "extra", multiple=True, metavar="KEY=VALUE",
              help="Any field of the strategy's config, e.g. --option layer_decay=0.8 --option l2sp=0.01.")
@click.option("--target", default=None, help="Data from where the model will be used (folder or table; labels optional, "
              "never trained on; they score the model and guard the choice): adapt to it without its labels.")
@click.option("--adapt", default=None, type=RegistryChoice(adapt_choices),
              help="Domain-adaptation method with --target (default auto: chosen by label-free validators).")
@click.option("--unlabelled", default=None, metavar="DATA", help="Unlabelled items like the training ones (folder or "
              "table; labels in it are ignored), for --strategy pseudo-label and as one more candidate of auto.")
@click.option("--budget", default=None, help="Time budget of --strategy auto's search, e.g. 90s, 10m, 1h30m (a bare "
              "number is seconds); loading, feature extraction, the baseline and the report come on top.")
@click.option("--resume", is_flag=True, help="Continue an interrupted fine-tuning run from its checkpoint (<out>.ckpt); "
              "refused if the checkpoint was made from other data or options.")
@click.option("--out", "-o", "out_dir", default=None, help="Folder to save the model in: new, empty, or a model folder "
              "with --overwrite (default: runs/<data>-<strategy>-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace the model already in --out (never a folder that is not a model).")
@click.option("--val", type=click.FloatRange(0, 1, max_open=True), default=0.15, show_default=True, help="Validation fraction (for choosing hyper-parameters).")
@click.option("--test", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True, help="Test fraction (for the reported scores).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the split and of training.")
@click.option("--image-size", type=int, default=None, help="Override the backbone's input size (pixels).")
@click.option("--max-length", type=int, default=None, help="Override the backbone's maximum tokens per text.")
@click.option("--split-column", default=None, help="Column naming train / val / test per row.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size for feature extraction.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when there is one).")
@click.option("--cache-dir", default=None, help="Feature cache folder (default: ~/.cache/headstart, or $HEADSTART_CACHE).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")
@click.option("--no-baseline", is_flag=True, help="Skip the no-transfer baseline.")
@click.option("--track", is_flag=True, help="Log the run to MLflow (parameters, per-epoch and final metrics, report, "
              "model folder): to --track-uri, else $MLFLOW_TRACKING_URI, else ./mlruns. Setting "
              "MLFLOW_TRACKING_URI alone also tracks. Needs pip install 'headstart[track]'.")
@click.option("--track-uri", default=None, metavar="URI", help="MLflow tracking server or store for --track, e.g. "
              "http://127.0.0.1:5000.")
@data_options
def command(data: str, backbone: str | None, strategy: str, head: str | None, epochs: int | None, lr: float | None,
            extra: tuple[str, ...], target: str | None, adapt: str | None, unlabelled: str | None,
            budget: str | None, resume: bool,
            out_dir: str | None, overwrite: bool, val: float, test: float,
            seed: int, image_size: int | None, max_length: int | None, split_column: str | None, batch_size: int,
            device: str | None, cache_dir: str | None, no_cache: bool, no_baseline: bool, track: bool, track_uri: str | None,
            text_column: str | None,
            label_column: str | None, encoding: str | None) -> None:
    """Validate DATA, extract features, adapt the backbone, evaluate against a baseline, save."""
    from ..api import fit
    from ..errors import ConfigError

    if adapt is not None and target is None:
        raise ConfigError("--adapt needs --target: the unlabelled data to adapt to.")
    if target is not None:
        if strategy not in ("linear-probe", "domain-adapt"):
            hint = (f" (`{strategy}` looks like an option: options go with --option KEY=VALUE)" if "=" in strategy
                    else "")
            raise ConfigError(f"--target adapts with its own methods; it cannot be combined with --strategy "
                              f"{strategy}{hint}.",
                              fix="drop --strategy, choose the method with --adapt, and pass options as "
                                  "--option KEY=VALUE (e.g. --option label_shift=on).")
        strategy = "domain-adapt"
    options = parse_options(strategy, extra)
    if target is not None:
        if adapt is not None and "method" in options and str(options["method"]) != adapt:
            raise ConfigError(f"--adapt {adapt} and --option method={options['method']} ask for two different methods.",
                              fix="give the method once, with --adapt.")
        options["method"] = adapt or str(options.get("method", "auto"))
    if budget is not None:
        from ..methods.auto import parse_budget

        if strategy != "auto":
            raise ConfigError(f"--budget is the time budget of --strategy auto; --strategy {strategy} trains for "
                              "its epochs.", fix="add --strategy auto, or drop --budget (cap a run with --epochs).")
        seconds = parse_budget(budget)
        if not seconds > 0 or seconds == float("inf"):
            raise ConfigError(f"--budget must be a positive, finite time such as 90s, 10m or 1h, got {budget!r}.")
        if "budget_s" in options and float(options["budget_s"]) != seconds:  # type: ignore[arg-type]
            raise ConfigError(f"Two budgets were given: --budget {budget} and --option budget_s="
                              f"{options['budget_s']:g}.", fix="give one of them.")
        options["budget_s"] = seconds
    if lr is not None and strategy == "auto":
        raise ConfigError("--strategy auto tries several learning rates itself; --lr does not apply to it.",
                          fix="scale its grid with --option lr_factors=0.3,1,3, or fix a strategy with --strategy.")
    for key, value in (("head", head), ("epochs", epochs), ("lr", lr)):
        if value is not None:
            options[key] = value
    if out_dir is None:
        out_dir = default_out_dir(data, strategy)  # fit says where it saved
    model = fit(data, backbone=backbone, strategy=strategy, out=out_dir, val=val, test=test, seed=seed,
                image_size=image_size, max_length=max_length, cache_dir=cache_dir, use_cache=not no_cache,
                device=device, batch_size=batch_size, baseline=not no_baseline, options=options,
                text_column=text_column, label_column=label_column, split_column=split_column, encoding=encoding, log=log,
                command="headstart " + shlex.join(sys.argv[1:]), resume=resume, target=target, overwrite=overwrite,
                unlabelled=unlabelled)
    print_summary(model, out_dir)
    if track or track_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        from ..workflows.tracking import track_run, tracking_uri

        run_id = track_run(out_dir, uri=track_uri)
        log(f"Tracked as MLflow run {run_id} in {tracking_uri(track_uri)}")
