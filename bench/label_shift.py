"""Label shift: how well the target's class proportions are estimated without its labels, and
what correcting for them does to target accuracy.

Three source -> target pairs, each target resampled (with replacement, per class) to 1000 items
with skewed class proportions, two skews, 3 seeds:

- ``bbc`` (labels only): BBC News, source = first 400 characters of the even-numbered articles,
  target = first 400 characters of the odd-numbered ones. minilm-l6 features.
- ``bbc-ends`` (labels and inputs): the same, but the target sees the last 400 characters of its
  articles (the article-ends pair of ``bench/domain_text.py``).
- ``mnist-uci`` (labels and a large input shift): MNIST (100 per class) -> UCI digits,
  efficientnet-lite0 features.

Skews: ``one-50``: one class (a different one per seed) holds 50%, the others share the rest
equally; ``dirichlet``: proportions drawn from Dirichlet(0.5) (per seed).

Table 1, the estimators: L1 error of the estimated proportions (sum over classes of |q - q_true|,
q_true the realised shares of the 1000 items) for BBSE and EM on a source-only linear probe, and
the probe's target accuracy without and with the prior correction (each estimator's).
Table 2 (``--adapt``; a training per variant, so minutes per cell on a CPU): target accuracy of the
``domain-adapt`` strategy's variants, frozen backbone, MMD as the aligner: source-only,
source-only + prior correction, MMD, MMD (importance-weighted) + prior correction, and what
``label_shift=auto`` kept, chosen without target labels.

    python bench/label_shift.py [--seeds 0,1,2] [--pairs bbc,bbc-ends,mnist-uci] [--adapt] [--epochs 6]
    python bench/label_shift.py --pairs bbc --skews one-50 --adapt --adapt-method self-train
Writes bench/results/label_shift/{results.json,label_shift.md} (``--adapt``: results_adapt[_<method>].json,
label_shift_adapt[_<method>].md; ``--adapt-method`` other than mmd swaps the aligner of table 2).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from headstart.backbones import create_backbone
from headstart.data import Dataset, load_data, split
from headstart.data.builtin import take_per_class
from headstart.domain.label_shift import estimate_prior, reweight
from headstart.features import extract_features_many
from headstart.methods.domain_adapt import AdaptConfig, adapt_domain
from headstart.train.linear_probe import LinearProbeConfig, linear_probe
from headstart.workflows.pipeline import encode_labels

N_TARGET = 1000


def pairs(names: list[str]) -> dict[str, tuple[Dataset, Dataset, str]]:
    out: dict[str, tuple[Dataset, Dataset, str]] = {}
    if any(n.startswith("bbc") for n in names):
        bbc = load_data("builtin:bbc-news")
        src_idx, tgt_idx = range(0, len(bbc), 2), range(1, len(bbc), 2)
        source = Dataset("text", [bbc.items[i][:400] for i in src_idx], [bbc.labels[i] for i in src_idx],
                         [bbc.ids[i] + " (start)" for i in src_idx], source="bbc-news heads")
        heads = Dataset("text", [bbc.items[i][:400] for i in tgt_idx], [bbc.labels[i] for i in tgt_idx],
                        [bbc.ids[i] + " (start)" for i in tgt_idx], source="bbc-news heads (odd)")
        tails = Dataset("text", [bbc.items[i][-400:] for i in tgt_idx], [bbc.labels[i] for i in tgt_idx],
                        [bbc.ids[i] + " (end)" for i in tgt_idx], source="bbc-news tails")
        out["bbc"] = (source, heads, "minilm-l6")
        out["bbc-ends"] = (source, tails, "minilm-l6")
    if "mnist-uci" in names:
        out["mnist-uci"] = (take_per_class(load_data("builtin:mnist"), 100, seed=0), load_data("builtin:digits"),
                            "efficientnet-lite0")
    return {n: out[n] for n in names}


def skewed(kind: str, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    if kind == "one-50":
        q = np.full(k, 0.5 / (k - 1))
        q[seed % k] = 0.5
        return q
    return rng.dirichlet(np.full(k, 0.5))


def resample(labels: np.ndarray, q: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices: class counts drawn from q, items drawn with replacement within each class."""
    rng = np.random.default_rng(2000 + seed)
    counts = rng.multinomial(n, q)
    idx = [rng.choice(np.flatnonzero(labels == c), size=m, replace=True) for c, m in enumerate(counts) if m]
    return np.sort(np.concatenate(idx))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--pairs", default="bbc,bbc-ends,mnist-uci")
    ap.add_argument("--skews", default="one-50,dirichlet")
    ap.add_argument("--adapt", action="store_true", help="also train the domain-adapt variants (table 2)")
    ap.add_argument("--label-shift", default="auto", choices=("auto", "on"),
                    help="the strategy's label_shift (on: the aligners train importance-weighted, and the "
                         "correction is kept whenever estimable)")
    ap.add_argument("--adapt-method", default="mmd", help="the method of table 2 (mmd, self-train, ...)")
    args = ap.parse_args()
    suffix = "" if args.adapt_method == "mmd" else "_" + args.adapt_method.replace("-", "_")
    seeds = [int(s) for s in args.seeds.split(",")]
    res_dir = Path(__file__).parent / "results" / "label_shift"
    res_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for pair, (source, target_pool, backbone) in pairs(args.pairs.split(",")).items():
        bb = create_backbone(backbone, **({"max_length": 128} if backbone.startswith("minilm") else {}))
        parts = split(source, val=0.15, test=0.0, seed=0)
        names = source.label_names
        k = len(names)
        tr, va, pool = extract_features_many(bb, [parts.train, parts.val, target_pool], progress=False)
        y = {s: encode_labels(getattr(parts, s).labels, names, s) for s in ("train", "val")}
        y_pool = encode_labels(target_pool.labels, names, "target")
        # The black box for the estimators: a source-only linear probe (train split), read on the
        # held-out validation split and the target.
        probe, _ = linear_probe(tr, y["train"], va, y["val"], k, LinearProbeConfig())
        import torch

        with torch.inference_mode():
            p_val = probe(torch.as_tensor(va)).softmax(1).double().numpy()
            p_pool = probe(torch.as_tensor(pool)).softmax(1).double().numpy()
        for skew in args.skews.split(","):
            for seed in seeds:
                q_draw = skewed(skew, k, seed)
                idx = resample(y_pool, q_draw, N_TARGET, seed)
                yt = y_pool[idx]
                truth = np.bincount(yt, minlength=k) / len(yt)
                row: dict = {"pair": pair, "skew": skew, "seed": seed, "true_proportions": truth.tolist(),
                             "source_proportions": (np.bincount(y["train"], minlength=k) / len(y["train"])).tolist()}
                for method in ("bbse", "em"):
                    t = time.perf_counter()
                    est = estimate_prior(method, p_val, y["val"], p_pool[idx], source_prior=None, bootstrap=0)
                    row[f"l1_{method}"] = est.l1(truth)
                    fixed = reweight(p_pool[idx], est.weights()) if est.ok else p_pool[idx]
                    row[f"probe_accuracy_{method}"] = float((fixed.argmax(1) == yt).mean())
                    row[f"proportions_{method}"] = None if est.target is None else est.target.tolist()
                    row[f"seconds_{method}"] = time.perf_counter() - t
                    if est.warning:
                        row[f"warning_{method}"] = est.warning
                row["probe_accuracy"] = float((p_pool[idx].argmax(1) == yt).mean())
                row["probe_accuracy_oracle"] = float((reweight(p_pool[idx], truth / np.maximum(
                    np.asarray(row["source_proportions"]), 1e-6)).argmax(1) == yt).mean())
                if not args.adapt:
                    rows.append(row)
                    print(f"{pair} {skew} seed {seed}: L1 bbse {row['l1_bbse']:.3f} em {row['l1_em']:.3f} | probe "
                          f"{100 * row['probe_accuracy']:.1f} -> bbse {100 * row['probe_accuracy_bbse']:.1f}, em "
                          f"{100 * row['probe_accuracy_em']:.1f} (true proportions {100 * row['probe_accuracy_oracle']:.1f})",
                          flush=True)
                    (res_dir / "results.json").write_text(json.dumps(rows, indent=2, default=float))
                    continue
                target = target_pool.subset(idx, name=f"{skew} {seed}")
                config = AdaptConfig(method=args.adapt_method, epochs=args.epochs, label_shift=args.label_shift,
                                     shift_estimator="em")
                t = time.perf_counter()
                res = adapt_domain(bb, parts, target, names, y, config, seeds=(seed,), target_labels=yt,
                                   features={"train": tr, "val": va, "target": pool[idx]}, progress=False,
                                   guard_with_labels=False)
                row["label_shift_option"] = args.label_shift
                row["adapt_method"] = args.adapt_method
                row["adapt_seconds"] = time.perf_counter() - t
                row["accuracy"] = {m: s["target_accuracy"][0] for m, s in res.summary.items()}
                row["kept"] = res.chosen + ("+prior" if res.label_shift.get("applied") else "")
                row["kept_accuracy"] = res.summary[row["kept"]]["target_accuracy"][0]
                row["reasons"] = res.reasons
                row["importance_weighting"] = res.label_shift.get("importance_weighting", {}).get("used", False)
                row["proportion_check"] = res.proportion_check  # the guard's: trusted?, confidence drop, mixture L1
                row["proportion_excess"] = {r["method"]: r.get("proportion_excess") for r in res.runs}
                est_kept = res.label_shift.get("estimate", {})
                row["l1_em_kept_model"] = (float(np.abs(np.array(est_kept["target"]) - truth).sum())
                                           if est_kept.get("target") is not None else None)
                rows.append(row)
                print(f"{pair} {skew} seed {seed}: L1 bbse {row['l1_bbse']:.3f} em {row['l1_em']:.3f} | probe "
                      f"{100 * row['probe_accuracy']:.1f} -> em {100 * row['probe_accuracy_em']:.1f} | "
                      + ", ".join(f"{m} {100 * a:.1f}" for m, a in row["accuracy"].items())
                      + f" | kept {res.chosen} ({row['adapt_seconds']:.0f} s)", flush=True)
                (res_dir / f"results_adapt{suffix}.json").write_text(json.dumps(rows, indent=2, default=float))
    render(rows, res_dir, adapt=args.adapt, method=args.adapt_method, suffix=suffix)


def _ms(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float) * scale
    if not len(a):
        return "n/a"
    return f"{a.mean():.{digits}f} +- {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


def render(rows: list[dict], res_dir: Path, adapt: bool = False, method: str = "mmd", suffix: str = "") -> None:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["pair"], r["skew"]), []).append(r)
    lines = [f"Target: {N_TARGET} items resampled to the skew; mean +- std over seeds "
             f"({', '.join(str(r['seed']) for r in rows[:len(next(iter(groups.values())))])}).", "",
             "Proportion error (L1, sum over classes) with a source-only linear probe as the black box, and "
             "the probe's target accuracy (%) without and with the prior correction:", "",
             "| pair | skew | L1 BBSE | L1 EM (BCTS) | probe | probe + prior (BBSE) | probe + prior (EM) "
             "| probe + true prior |", "|---|---|---|---|---|---|---|---|"]
    for (pair, skew), rs in groups.items():
        lines.append(f"| {pair} | {skew} | {_ms([r['l1_bbse'] for r in rs])} | {_ms([r['l1_em'] for r in rs])} "
                     f"| {_ms([r['probe_accuracy'] for r in rs], 100, 1)} "
                     f"| {_ms([r['probe_accuracy_bbse'] for r in rs], 100, 1)} "
                     f"| {_ms([r['probe_accuracy_em'] for r in rs], 100, 1)} "
                     f"| {_ms([r['probe_accuracy_oracle'] for r in rs], 100, 1)} |")
    if not adapt:
        (res_dir / "label_shift.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    lines += ["", f"Target accuracy (%), frozen backbone, bottleneck head; {method} as the adaptation (importance-"
              "weighted when the source-only estimate shows a shift and label_shift is on); the kept model is chosen "
              "without target labels:", "",
              f"| pair | skew | source-only | source-only + prior | {method} | {method} + prior | kept (label-free) "
              "| kept |",
              "|---|---|---|---|---|---|---|---|"]
    for (pair, skew), rs in groups.items():
        def acc(m: str) -> str:
            return _ms([r["accuracy"].get(m) for r in rs], 100, 1)

        kept = sorted({r["kept"] for r in rs})
        lines.append(f"| {pair} | {skew} | {acc('source-only')} | {acc('source-only+prior')} | {acc(method)} "
                     f"| {acc(method + '+prior')} | {_ms([r['kept_accuracy'] for r in rs], 100, 1)} | {', '.join(kept)} |")
    (res_dir / f"label_shift_adapt{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
