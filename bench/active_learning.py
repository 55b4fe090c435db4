"""Active learning: how many labels does each selection strategy need to match random picks?

Two real data sets with their default backbones and a warm feature cache: MNIST-5000
(``builtin:mnist:500``, efficientnet-lite0) and BBC News (``builtin:bbc-news``, minilm-l6). A fixed
stratified 20% test split (seed 0); the rest is the unlabelled pool. Each run starts from 2 random
labels per class (seeded, the same start for every strategy), then grows the labelled set to 4, 8,
12, 16, 24 and 32 per class, each step picking the new items with one strategy of
``headstart.quality.SELECTORS`` and the probe fitted on the labels so far; 3 seeds.

The probe: multinomial logistic regression (C = 0.1, the value the out-of-fold probe picks on both
full data sets) on the pool's standardised features, projected to their top 256 principal axes when
wider (the same inputs as ``check --deep``'s probe; no label is used to build them). Every strategy
sees the same features.

Labels saved: the random curve's mean accuracy at 32 labels per class is the target; each strategy's
mean curve is interpolated (linearly in labels) to find how many labels it needs to reach it.

    scripts/offline .venv/bin/python bench/active_learning.py     # -> bench/results/active_learning/
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # shared cores: BLAS threads spin against each other

import numpy as np  # noqa: E402

from headstart.backbones import create_backbone  # noqa: E402
from headstart.data import load_data  # noqa: E402
from headstart.features import extract_features_many  # noqa: E402
from headstart.quality import SELECTORS, select  # noqa: E402
from headstart.quality.probe import _fit, _softmax, apply_axes, principal_axes  # noqa: E402

SETS = {"mnist-5000": ("builtin:mnist:500", "efficientnet-lite0"), "bbc-news": ("builtin:bbc-news", "minilm-l6")}
PER_CLASS = (2, 4, 8, 12, 16, 24, 32)
SEEDS = (0, 1, 2)
C = 0.1
OUT = Path(__file__).parent / "results" / "active_learning"


def run_curve(z: np.ndarray, y: np.ndarray, zte: np.ndarray, yte: np.ndarray, k: int, strategy: str,
              seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.choice(np.flatnonzero(y == c), PER_CLASS[0], replace=False) for c in range(k)])
    accs = []
    for step, per_class in enumerate(PER_CLASS):
        w, b = _fit(z[labelled], y[labelled], k, C, 1e-4, None)
        accs.append(float((_softmax(zte @ w.T + b).argmax(1) == yte).mean()))
        if step + 1 == len(PER_CLASS):
            break
        need = PER_CLASS[step + 1] * k - len(labelled)
        pool = np.setdiff1d(np.arange(len(y)), labelled)
        picked = select(strategy, _softmax(z[pool] @ w.T + b), z[pool], z[labelled], need, seed=seed * 100 + step)
        labelled = np.concatenate([labelled, pool[picked]])
    return accs


def labels_needed(curve: list[float], target: float, k: int) -> float | None:
    labels = [p * k for p in PER_CLASS]
    if curve[0] >= target:
        return float(labels[0])
    for i in range(1, len(curve)):
        if curve[i] >= target:
            a0, a1 = curve[i - 1], curve[i]
            return float(labels[i - 1] + (target - a0) / (a1 - a0) * (labels[i] - labels[i - 1]))
    return None


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    only = sys.argv[1:] or list(SETS)
    for name in only:
        spec, bb_name = SETS[name]
        data = load_data(spec)
        names = data.label_names
        y_all = np.array([names.index(v) for v in data.labels])
        rng = np.random.default_rng(0)
        test_mask = np.zeros(len(y_all), bool)
        for c in range(len(names)):
            idx = rng.permutation(np.flatnonzero(y_all == c))
            test_mask[idx[: len(idx) // 5]] = True
        feats = extract_features_many(create_backbone(bb_name), [data], progress=False)[0]
        axes = principal_axes(feats[~test_mask], 256)
        z, zte = apply_axes(feats[~test_mask], *axes), apply_axes(feats[test_mask], *axes)
        y, yte, k = y_all[~test_mask], y_all[test_mask], len(names)
        curves: dict[str, list[list[float]]] = {}
        for strategy in SELECTORS.names():
            t = time.perf_counter()
            curves[strategy] = [run_curve(z, y, zte, yte, k, strategy, seed) for seed in SEEDS]
            mean = np.mean(curves[strategy], 0)
            print(f"{name} {strategy:8s} " + " ".join(f"{a:.4f}" for a in mean) + f"  ({time.perf_counter() - t:.1f} s)",
                  flush=True)
        with open(OUT / f"{name}.json", "w") as fh:
            json.dump({"data": name, "classes": k, "pool": int(len(y)), "test": int(len(yte)), "per_class": PER_CLASS,
                       "seeds": SEEDS, "curves": curves}, fh, indent=1)
    summarise([n for n in SETS if (OUT / f"{n}.json").exists()])


def summarise(names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    lines = ["| data | strategy | " + " | ".join(f"{p}/class" for p in PER_CLASS) + " | labels to reach random@32 | saved |",
             "|---|---|" + "---|" * len(PER_CLASS) + "---|---|"]
    for ax, name in zip(axes[0], names):
        res = json.load(open(OUT / f"{name}.json"))
        k = res["classes"]
        target = float(np.mean(res["curves"]["random"], 0)[-1])
        for strategy, runs in res["curves"].items():
            arr = np.asarray(runs)
            mean, std = arr.mean(0), arr.std(0)
            (line,) = ax.plot(PER_CLASS, mean, marker="o", ms=3, label=strategy, lw=2.2 if strategy == "random" else 1.4,
                              color="black" if strategy == "random" else None)
            ax.fill_between(PER_CLASS, mean - std, mean + std, alpha=0.10, color=line.get_color())
            needed = labels_needed(list(mean), target, k)
            total = PER_CLASS[-1] * k
            saved = f"{1 - needed / total:.0%}" if needed is not None else "not reached"
            lines.append(f"| {name} | {strategy} | " + " | ".join(f"{a:.4f}" for a in mean)
                         + f" | {f'{needed:.0f} of {total}' if needed is not None else f'> {total}'} | {saved} |")
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(PER_CLASS, [str(p) for p in PER_CLASS])
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{name} ({k} classes, pool {res['pool']}, test {res['test']}; mean ± sd of 3 seeds)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=110)
    text = ("Mean test accuracy over 3 seeds at each number of labels per class; the target is random's mean at "
            "32 per class (the dotted line in the plot).\n\n" + "\n".join(lines) + "\n")
    (OUT / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
