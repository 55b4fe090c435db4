"""The scores at scale.

Every default ranking score (and the plain H-score) on 50 000 x 2048 float32 features with 10
classes, as a ResNet-50-sized backbone would give on a CIFAR-sized data set: seconds and the peak
memory the score allocates on top of the features (``tracemalloc`` sees NumPy's allocations).
LEEP / NCE take 50 000 x 1000 source probabilities.

    python bench/rank_cost.py [--n 50000] [--d 2048]
Writes bench/results/rank_cost.md.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np

from headstart.rank import score
from headstart.workflows.rank import DEFAULT_SCORES

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.n)
    # class structure plus noise, so that the fixed-point iterations have something to fit
    feats = (rng.standard_normal((args.n, args.d), dtype=np.float32)
             + np.eye(args.classes, dtype=np.float32)[y] @ rng.standard_normal((args.classes, args.d), dtype=np.float32))
    logits = rng.standard_normal((args.n, 1000), dtype=np.float32) + 3 * np.eye(1000, dtype=np.float32)[y * 7]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    mb = feats.nbytes / 2**20
    lines = [f"{args.n} x {args.d} float32 features ({mb:.0f} MB), {args.classes} classes; "
             f"source probabilities {args.n} x 1000.", "",
             "| score | seconds | peak extra memory MB | value |", "|---|---|---|---|"]
    for name in (*DEFAULT_SCORES, "hscore"):
        tracemalloc.start()
        t = time.perf_counter()
        value = score(name, feats, y, probs)
        secs = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        lines.append(f"| {name} | {secs:.1f} | {peak:.0f} | {value:.4g} |")
        print(lines[-1], flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "rank_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
