"""Label issues: headstart's flagged set against cleanlab's default on the same probabilities.

Two real data sets with their default backbones and a warm feature cache: MNIST-5000
(``builtin:mnist:500``, efficientnet-lite0) and BBC News (``builtin:bbc-news``, 2225 articles,
minilm-l6). A fixed stratified 80 / 20 split (seed 0); the training labels are corrupted four ways:
5% and 10% of them flipped uniformly (to any other class) or class-conditionally (to the class the
clean out-of-fold probe confuses it with most), 3 seeds each. For each corruption:

- out-of-fold probabilities from headstart's K-fold probe (:func:`headstart.quality.out_of_fold_proba`);
- the flagged set of every cleanlab ``filter_by`` (headstart's default is one of them) and of
  ``cleanlab.filter.find_label_issues(labels, pred_probs)`` with cleanlab's defaults; precision,
  recall and F1 against the flipped items;
- test accuracy of the same probe fitted on the clean labels, on the noisy labels, and on the noisy
  labels minus headstart's flagged items (and minus cleanlab's), each with the C its own training
  labels choose (the out-of-fold probe's rule), and the share of the accuracy lost to noise that
  cleaning recovers.

    scripts/offline .venv/bin/python bench/label_issues.py      # -> bench/results/label_issues/
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
from headstart.data import load_data, split  # noqa: E402
from headstart.features import extract_features_many  # noqa: E402
from headstart.quality import DEFAULT_FILTER, FILTERS, find_label_issues, out_of_fold_proba  # noqa: E402
from headstart.quality.probe import choose_c, fit_probe  # noqa: E402

SETS = {"mnist-5000": ("builtin:mnist:500", "efficientnet-lite0"), "bbc-news": ("builtin:bbc-news", "minilm-l6")}
RATES = (0.05, 0.10)
KINDS = ("uniform", "class-conditional")
SEEDS = (0, 1, 2)
OUT = Path(__file__).parent / "results" / "label_issues"


def flip(y: np.ndarray, k: int, rate: float, kind: str, confused: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    noisy = y.copy()
    if kind == "uniform":
        shift = rng.integers(1, k, size=len(idx))  # any other class, uniformly
        noisy[idx] = (y[idx] + shift) % k
    else:
        noisy[idx] = confused[y[idx]]
    return noisy, np.sort(idx)


def prf(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    f, t = set(flagged.tolist()), set(truth.tolist())
    tp = len(f & t)
    p = tp / len(f) if f else 0.0
    r = tp / len(t) if t else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "flagged": len(f)}


def accuracy(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, k: int, C: float) -> float:
    return float((fit_probe(xtr, ytr, k, C)(xte).argmax(1) == yte).mean())


def main() -> None:
    from cleanlab.filter import find_label_issues as cleanlab_default

    OUT.mkdir(parents=True, exist_ok=True)
    only = sys.argv[1:] or list(SETS)
    rows = []
    for name in only:
        spec, bb_name = SETS[name]
        data = load_data(spec)
        names = data.label_names
        y_all = np.array([names.index(v) for v in data.labels])
        rng = np.random.default_rng(0)
        test_mask = np.zeros(len(y_all), bool)
        for c in range(len(names)):  # a fixed stratified 20% test split
            idx = rng.permutation(np.flatnonzero(y_all == c))
            test_mask[idx[: len(idx) // 5]] = True
        feats = extract_features_many(create_backbone(bb_name), [data], progress=False)[0]
        xtr, ytr, xte, yte = feats[~test_mask], y_all[~test_mask], feats[test_mask], y_all[test_mask]
        k = len(names)
        t = time.perf_counter()
        clean_proba, info = out_of_fold_proba(xtr, ytr, k)
        cm = np.zeros((k, k))
        np.add.at(cm, (ytr, clean_proba.argmax(1)), 1)
        np.fill_diagonal(cm, -1)
        confused = cm.argmax(1)  # each class's most confused class under the clean probe
        clean_acc = accuracy(xtr, ytr, xte, yte, k, info["C"])
        print(f"{name}: train {len(ytr)}, test {len(yte)}, clean OOF accuracy {(clean_proba.argmax(1) == ytr).mean():.4f}, "
              f"clean test accuracy {clean_acc:.4f} (C = {info['C']}, {time.perf_counter() - t:.1f} s)", flush=True)
        for kind in KINDS:
            for rate in RATES:
                for seed in SEEDS:
                    t = time.perf_counter()
                    noisy, flipped = flip(ytr, k, rate, kind, confused, seed)
                    proba, pinfo = out_of_fold_proba(xtr, noisy, k, seed=seed)
                    oof_s = time.perf_counter() - t
                    ours = find_label_issues(noisy, proba).indices
                    theirs = np.asarray(cleanlab_default(noisy, proba, return_indices_ranked_by="self_confidence"))
                    row = {"data": name, "kind": kind, "rate": rate, "seed": seed, "n_train": len(ytr),
                           "n_flipped": len(flipped), "oof_seconds": oof_s, "C": pinfo["C"],
                           "headstart": prf(ours, flipped), "cleanlab_default": prf(theirs, flipped),
                           "filters": {f: prf(find_label_issues(noisy, proba, filter_by=f).indices, flipped)
                                       for f in FILTERS}}
                    keep_ours = np.setdiff1d(np.arange(len(noisy)), ours)
                    keep_theirs = np.setdiff1d(np.arange(len(noisy)), theirs)
                    # Each probe picks its C on its own training labels, as the clean and the noisy one did.
                    c_ours = choose_c(xtr[keep_ours], noisy[keep_ours], k)
                    c_theirs = choose_c(xtr[keep_theirs], noisy[keep_theirs], k)
                    row["accuracy"] = {"clean": clean_acc,
                                       "noisy": accuracy(xtr, noisy, xte, yte, k, pinfo["C"]),
                                       "cleaned_headstart": accuracy(xtr[keep_ours], noisy[keep_ours], xte, yte, k, c_ours),
                                       "cleaned_cleanlab": accuracy(xtr[keep_theirs], noisy[keep_theirs], xte, yte, k, c_theirs)}
                    row["C_cleaned"] = {"headstart": c_ours, "cleanlab": c_theirs}
                    a = row["accuracy"]
                    lost = a["clean"] - a["noisy"]
                    row["recovered_headstart"] = (a["cleaned_headstart"] - a["noisy"]) / lost if lost > 0 else None
                    row["recovered_cleanlab"] = (a["cleaned_cleanlab"] - a["noisy"]) / lost if lost > 0 else None
                    rows.append(row)
                    print(f"  {kind} {rate:.0%} seed {seed}: F1 headstart {row['headstart']['f1']:.3f} "
                          f"cleanlab {row['cleanlab_default']['f1']:.3f}; acc clean {a['clean']:.4f} noisy {a['noisy']:.4f} "
                          f"cleaned {a['cleaned_headstart']:.4f} / {a['cleaned_cleanlab']:.4f} ({time.perf_counter() - t:.1f} s)",
                          flush=True)
        with open(OUT / f"{name}.json", "w") as fh:
            json.dump([r for r in rows if r["data"] == name], fh, indent=1)
    summarise(only)


def summarise(names: list[str]) -> None:
    rows = [r for n in names for r in json.load(open(OUT / f"{n}.json"))]
    lines = [f"Default filter: `{DEFAULT_FILTER}`. Mean over {len(SEEDS)} seeds; P / R / F1 of the flagged set "
             "against the flipped items; accuracy of the probe on the fixed test split.", "",
             "| data | noise | rate | headstart P / R / F1 | cleanlab default P / R / F1 | acc clean | acc noisy | "
             "acc cleaned (headstart) | acc cleaned (cleanlab) | recovered (headstart / cleanlab) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    filt_lines = ["", "F1 of every cleanlab `filter_by` on the same probabilities (mean over seeds):", "",
                  "| data | noise | rate | " + " | ".join(FILTERS) + " |", "|---|---|---|" + "---|" * len(FILTERS)]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["data"], r["kind"], r["rate"]), []).append(r)
    m = lambda rs, f: float(np.mean([f(r) for r in rs]))  # noqa: E731
    for (data, kind, rate), rs in groups.items():
        h = [m(rs, lambda r, q=q: r["headstart"][q]) for q in ("precision", "recall", "f1")]
        c = [m(rs, lambda r, q=q: r["cleanlab_default"][q]) for q in ("precision", "recall", "f1")]
        acc = [m(rs, lambda r, q=q: r["accuracy"][q]) for q in ("clean", "noisy", "cleaned_headstart", "cleaned_cleanlab")]
        rec = [np.mean([r[q] for r in rs if r[q] is not None]) if any(r[q] is not None for r in rs) else float("nan")
               for q in ("recovered_headstart", "recovered_cleanlab")]
        lines.append(f"| {data} | {kind} | {rate:.0%} | {h[0]:.3f} / {h[1]:.3f} / **{h[2]:.3f}** | "
                     f"{c[0]:.3f} / {c[1]:.3f} / {c[2]:.3f} | {acc[0]:.4f} | {acc[1]:.4f} | {acc[2]:.4f} | {acc[3]:.4f} | "
                     f"{rec[0]:.0%} / {rec[1]:.0%} |")
        filt_lines.append(f"| {data} | {kind} | {rate:.0%} | "
                          + " | ".join(f"{m(rs, lambda r, f=f: r['filters'][f]['f1']):.3f}" for f in FILTERS) + " |")
    means = {f: float(np.mean([r["filters"][f]["f1"] for r in rows])) for f in FILTERS}
    filt_lines += ["", "Mean F1 over all conditions: " + ", ".join(f"{f} {v:.3f}" for f, v in means.items()) + "."]
    oof = [r["oof_seconds"] for r in rows]
    text = "\n".join(lines + filt_lines + ["", f"Out-of-fold probe: median {np.median(oof):.1f} s per run."]) + "\n"
    (OUT / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
