"""Issue #4, must-shows 1 and 2: do the transferability scores rank backbones the way fine-tuning does?

For each data set, every candidate backbone is (a) scored by every ranker on the training split's
features, timed from a cold feature cache, and (b) fine-tuned (LP-FT; backbones that cannot train,
i.e. raw pixels and the ONNX MiniLM, get the linear probe, which is all a user could do with them)
and scored on a held-out test split. The agreement between each score and the fine-tuned accuracy
is the weighted Kendall tau (scipy's ``weightedtau``, hyperbolic weights, as in the TLlib
model-selection benchmark that reports LogME's mean 0.665 over 10 ImageNet models x 8 data sets).

Images: efficientnet-lite0/1/2 + raw-pixels on MNIST (30/class), UCI digits (30/class) and
scikit-image's LFW subset (face / not face, 200). Text: minilm-l6, minilm-l3-onnx and a randomly
initialised 2-layer BERT (the no-transfer reference) on BBC News (30/class).

    python bench/rank_validation.py [--epochs 3]
Writes bench/results/rank_validation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import weightedtau

from headstart.adapt import make_config
from headstart.api import train_model
from headstart.backbones import _minilm_l6_dir, create_backbone
from headstart.data import Dataset, load_data, split
from headstart.rank.api import rank_backbones

SCORES = ("logme", "hscore", "hscore-shrink", "nce", "leep", "knn", "probe-cv")
OUT = Path(__file__).parent / "results"


def lfw() -> Dataset:
    from skimage.data import lfw_subset

    x = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    labels = ["face"] * 100 + ["not-face"] * 100
    return Dataset("image", list(x), labels, [f"lfw_subset #{i}" for i in range(200)], source="skimage lfw_subset")


def tiny_random_bert(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(_minilm_l6_dir())
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=256)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return f"hf:{folder}"


def run_task(name: str, data: Dataset, backbones: list[str], epochs: int, cache: Path) -> dict:
    parts = split(data, val=0.15, test=0.3, seed=0)
    names = data.label_names
    t = time.perf_counter()
    ranking = rank_backbones(parts.train, backbones, scores=SCORES, cache_dir=cache, progress=False)
    rank_seconds = time.perf_counter() - t
    accs, ft_seconds, strategies = {}, {}, {}
    for bb_name in backbones:
        bb = create_backbone(bb_name)
        strategy = "lp-ft" if bb.trainable else "linear-probe"  # raw pixels and ONNX have nothing to tune
        strategies[bb_name] = strategy
        options = {"epochs": epochs, "batch_size": 16} if strategy == "lp-ft" else {}
        t = time.perf_counter()
        _, proba, ys, _ = train_model(bb, parts, names, strategy, make_config(strategy, **options), cache_dir=cache,
                                      progress=False)
        ft_seconds[bb_name] = time.perf_counter() - t
        accs[bb_name] = float((proba.argmax(1) == ys["test"]).mean())
        print(f"{name}: {bb_name} {strategy} test accuracy {accs[bb_name]:.3f} ({ft_seconds[bb_name]:.0f} s)", flush=True)
    rows = {r["backbone"]: r for r in ranking["rows"]}
    taus = {}
    for s in SCORES:
        pairs = [(rows[b]["scores"][s], accs[b]) for b in backbones if rows[b]["scores"][s] is not None]
        if len(pairs) >= 3:
            taus[s] = float(weightedtau([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
    trained = [b for b in backbones if strategies[b] == "lp-ft"]
    cheapest = min(trained, key=lambda b: ft_seconds[b])
    return {"task": name, "n_train": len(parts.train), "n_test": len(parts.test), "accuracy": accs,
            "scores": {b: rows[b]["scores"] for b in backbones}, "weighted_tau": taus,
            "rank_seconds_cold_cache": rank_seconds,
            "score_seconds_warm": {b: rows[b]["seconds"] for b in backbones},
            "finetune_seconds": ft_seconds, "strategy": strategies, "cheapest_finetune": cheapest,
            "cost_ratio": rank_seconds / ft_seconds[cheapest]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    images = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "raw-pixels"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        text = ["minilm-l6", "minilm-l3-onnx", tiny_random_bert(Path(tmp) / "tiny-bert")]
        tasks = [("MNIST 30/class", load_data("builtin:mnist:30"), images),
                 ("UCI digits 30/class", load_data("builtin:digits:30"), images),
                 ("LFW subset", lfw(), images),
                 ("BBC News 30/class", load_data("builtin:bbc-news:30"), text)]
        for name, data, bbs in tasks:
            # a fresh cache per task: the ranking time includes extracting every candidate's features
            results.append(run_task(name, data, bbs, args.epochs, Path(tmp) / f"cache-{len(results)}"))
    image_results = [r for r in results if "BBC" not in r["task"]]
    mean_tau = {s: float(np.mean([r["weighted_tau"][s] for r in image_results if s in r["weighted_tau"]]))
                for s in SCORES if any(s in r["weighted_tau"] for r in image_results)}
    OUT.mkdir(exist_ok=True)
    (OUT / "rank_validation.json").write_text(json.dumps({"epochs": args.epochs, "tasks": results,
                                                          "mean_weighted_tau_images": mean_tau}, indent=2))
    lines = ["| task | " + " | ".join(SCORES) + " | ranking s (cold) | cheapest fine-tune s | ratio |",
             "|---" * (len(SCORES) + 4) + "|"]
    for r in results:
        cells = [f"{r['weighted_tau'][s]:+.2f}" if s in r["weighted_tau"] else "n/a" for s in SCORES]
        lines.append(f"| {r['task']} | " + " | ".join(cells) + f" | {r['rank_seconds_cold_cache']:.0f} | "
                     f"{r['finetune_seconds'][r['cheapest_finetune']]:.0f} ({r['cheapest_finetune']}) | "
                     f"{100 * r['cost_ratio']:.0f}% |")
    lines.append("| mean over the image tasks | " + " | ".join(f"{mean_tau[s]:+.2f}" if s in mean_tau else "n/a"
                                                        for s in SCORES) + " | | | |")
    lines += ["", "Test accuracy reached per backbone:", ""]
    for r in results:
        lines.append(f"- {r['task']}: " + ", ".join(f"{b.split('/')[-1]} {100 * a:.1f}%" for b, a in r["accuracy"].items()))
    (OUT / "rank_validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
