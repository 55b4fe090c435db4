"""A second `fit` on the same data (feature-cache hit) vs the first.

Both fits run in this one process, one after the other, on the same data and a fresh cache folder,
so the ratio is not distorted by machine-to-machine noise. Both include validation, splitting, the
probe's C sweep and the baseline; only the backbone pass differs.

    python bench/cache_speedup.py [DATA] [BACKBONE]     # default: builtin:mnist:100 efficientnet-lite0
"""

from __future__ import annotations

import sys
import tempfile
import time

import headstart


def main() -> None:
    data = sys.argv[1] if len(sys.argv) > 1 else "builtin:mnist:100"
    backbone = sys.argv[2] if len(sys.argv) > 2 else "efficientnet-lite0"
    with tempfile.TemporaryDirectory() as cache:
        times, models = [], []
        for _ in range(2):
            t = time.perf_counter()
            models.append(headstart.fit(data, backbone=backbone, cache_dir=cache, progress=False))
            times.append(time.perf_counter() - t)
    same = models[0].info["metrics"]["test"] == models[1].info["metrics"]["test"]
    feat = [m.info["timings_s"]["adapt"] for m in models]  # features + probe
    print(f"data {data}, backbone {backbone}")
    print(f"first fit (cache miss): {times[0]:.2f} s   (features + probe {feat[0]:.2f} s)")
    print(f"second fit (cache hit): {times[1]:.2f} s   (features + probe {feat[1]:.2f} s)")
    print(f"speed-up of the whole fit: {times[0] / times[1]:.1f}x; of the features + probe step: {feat[0] / max(feat[1], 1e-9):.0f}x")
    print(f"identical test metrics: {same}")


if __name__ == "__main__":
    main()
