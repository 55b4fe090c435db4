"""Headstart's SetFit-style few-shot vs the setfit library, side by side.

Same encoder (the packaged all-MiniLM-L6-v2 folder), same BBC News splits: one fixed test split
(20%, seed 0); per seed, K examples per class for training (and, for headstart's head, K/4 per class,
at least 2, of validation, which setfit does not use). Accuracy on the fixed test set and wall
time of training + prediction, both in this process.

    python bench/setfit_compare.py --shots 8 --seeds 0,1,2,3,4
    python bench/setfit_compare.py --shots 32 --setfit-iterations 5 --pairs-per-example 5

Pair budgets: setfit draws ``2 * num_iterations`` pairs per example (paper default 20 iterations);
headstart ``2 * pairs_per_example`` (default 10). At 32 shots setfit's paper default means 6 400
pairs, about 45 minutes per seed on 2 CPU cores, so that row uses an equal, smaller budget for both
(1 600 pairs) and says so.
Appends to bench/results/setfit_compare.jsonl and rewrites bench/results/setfit_compare.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from headstart.runtime import Runtime
from headstart._malloc import tune_malloc
from headstart.methods import make_config
from headstart.workflows.pipeline import train_model
from headstart.backbones import _minilm_l6_dir, create_backbone
from headstart.data import load_data, split
from headstart.data.builtin import take_per_class
from headstart.data.splits import Splits
from headstart.evaluation.metrics import classification_metrics

OUT = Path(__file__).parent / "results"


def run_setfit(train, test, names, seed: int, iterations: int) -> tuple[float, float]:
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    t = time.perf_counter()
    model = SetFitModel.from_pretrained(str(_minilm_l6_dir()))
    import tempfile

    # setfit's Trainer writes checkpoints to ./checkpoints by default: keep them out of the checkout
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="setfit-"), batch_size=16, num_epochs=1,
                             num_iterations=iterations, seed=seed, max_length=128, report_to="none",
                             show_progress_bar=False)
    ds = HFDataset.from_dict({"text": list(train.items), "label": [names.index(x) for x in train.labels]})
    Trainer(model=model, args=args, train_dataset=ds).train()
    pred = np.asarray(model.predict(list(test.items), batch_size=64))
    acc = float((pred == np.array([names.index(x) for x in test.labels])).mean())
    return acc, time.perf_counter() - t


def run_headstart(parts, names, seed: int, pairs_per_example: int) -> tuple[float, float]:
    t = time.perf_counter()
    bb = create_backbone("minilm-l6", max_length=128)
    config = make_config("setfit", pairs_per_example=pairs_per_example)
    _, proba, ys, _ = train_model(bb, parts, names, "setfit", config, seed=seed,
                                  runtime=Runtime(progress=False, use_cache=False))
    return classification_metrics(ys["test"], proba, names)["accuracy"], time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--only", default="headstart,setfit")
    ap.add_argument("--setfit-iterations", type=int, default=20)
    ap.add_argument("--pairs-per-example", type=int, default=10)
    args = ap.parse_args()
    tune_malloc()  # headstart applies it when it trains; setfit gets the same allocator from the start
    data = load_data("builtin:bbc-news")
    fixed = split(data, val=0.15, test=0.2, seed=0)
    names = data.label_names
    OUT.mkdir(exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        train = take_per_class(fixed.train, args.shots, seed=seed)
        val = take_per_class(fixed.val, max(2, args.shots // 4), seed=seed)
        for tool in args.only.split(","):
            if tool == "headstart":
                acc, secs = run_headstart(Splits(train, val, fixed.test), names, seed, args.pairs_per_example)
                pairs = 2 * args.pairs_per_example * len(train)
            else:
                acc, secs = run_setfit(train, fixed.test, names, seed, args.setfit_iterations)
                pairs = 2 * args.setfit_iterations * len(train)
            row = {"tool": tool, "shots": args.shots, "seed": seed, "accuracy": acc, "seconds": secs,
                   "n_test": len(fixed.test), "pairs": pairs}
            print(json.dumps(row), flush=True)
            with open(OUT / "setfit_compare.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
    table()


def table() -> None:
    rows = [json.loads(x) for x in open(OUT / "setfit_compare.jsonl")]
    for r in rows:  # rows from before the pair budget was recorded used the defaults
        r.setdefault("pairs", r["shots"] * 5 * (20 if r["tool"] == "headstart" else 40))
    keys = sorted({(r["shots"], r["tool"], r["pairs"]) for r in rows})
    lines = ["| shots per class | tool | pairs | seeds | accuracy (mean +- std) | seconds per run |",
             "|---|---|---|---|---|---|"]
    for key in keys:
        sel = [r for r in rows if (r["shots"], r["tool"], r["pairs"]) == key]
        a = np.array([r["accuracy"] for r in sel]) * 100
        s = np.mean([r["seconds"] for r in sel])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(a)} | {a.mean():.1f} +- "
                     f"{a.std(ddof=1) if len(a) > 1 else 0:.1f} | {s:.0f} |")
    (OUT / "setfit_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
