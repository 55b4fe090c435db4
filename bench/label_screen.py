"""The label screen `fit` runs on frozen features: how much it flags on clean and on noisy labels.

`headstart.quality.screen_labels` (3-fold probe + confident learning) on the training split of
BBC News and MNIST, with 0%, 5% and 10% of the labels flipped uniformly to another class. The warning
threshold (``WARN_SHARE``) must sit above what clean data gives and below what 5% noise gives.

    python bench/label_screen.py   # -> bench/results/label_screen.md
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from headstart.backbones import create_backbone
from headstart.data import load_data, split
from headstart.features import extract_features_many
from headstart.quality import WARN_SHARE, screen_labels
from headstart.workflows.pipeline import encode_labels

SETS = (("builtin:bbc-news", "minilm-l6"), ("builtin:mnist", "efficientnet-lite0"))
RATES = (0.0, 0.05, 0.10)
OUT = Path(__file__).parent / "results" / "label_screen.md"


def main() -> None:
    rows = ["| data | training items | flipped | flagged | share flagged | flips among the 20 worst | warns | seconds |",
            "|---|---|---|---|---|---|---|---|"]
    for name, backbone in SETS:
        data = load_data(name)
        train = split(data, val=0.15, test=0.2, seed=0).train
        feats, = extract_features_many(create_backbone(backbone), [train], progress=False)
        y = encode_labels(train.labels, data.label_names, name)
        k = len(data.label_names)
        for rate in RATES:
            rng = np.random.default_rng(0)
            flipped = rng.choice(len(y), int(rate * len(y)), replace=False)
            noisy = y.copy()
            noisy[flipped] = (noisy[flipped] + rng.integers(1, k, len(flipped))) % k
            t = time.perf_counter()
            r = screen_labels(feats, noisy, k)
            seconds = time.perf_counter() - t
            hits = len(set(r["indices"]) & set(flipped.tolist()))
            rows.append(f"| {name.split(':')[1]} | {len(y)} | {100 * rate:.0f}% | {r['count']} | "
                        f"{100 * r['share']:.1f}% | {hits} / {len(r['indices'])} | {'yes' if r['warn'] else 'no'} | "
                        f"{seconds:.1f} |")
            print(rows[-1], flush=True)
    text = (f"Warning threshold: {100 * WARN_SHARE:.0f}% of the training items.\n\n" + "\n".join(rows) + "\n")
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
