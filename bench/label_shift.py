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
q_true the realised shares of the 1000 items) for BBSE, RLLS, EM and the mean of BBSE and EM, each
calibrated on five kinds of source probabilities (CALIBRATIONS: a validation split the probe was
refitted on, a held-out validation split, and out-of-fold probabilities of every source item, with
three ways of scoring the target), against a reference line: the L1 of a 1000-item multinomial
sample's shares from the drawn proportions. Then the probe's target accuracy without and with the
prior correction (the ``val`` calibration, which is what ``headstart gap`` and ``domain-adapt`` use).
Table 2 (``--adapt``; a training per variant, so minutes per cell on a CPU): target accuracy of the
``domain-adapt`` strategy's variants, frozen backbone, MMD as the aligner: source-only,
source-only + prior correction, MMD, MMD (importance-weighted) + prior correction, and what
``label_shift=auto`` kept, chosen without target labels.

    python bench/label_shift.py [--seeds 0,1,2] [--pairs bbc,bbc-ends,mnist-uci] [--adapt] [--epochs 6] [--tag T]
    python bench/label_shift.py --pairs bbc --skews one-50 --adapt --adapt-method self-train
Writes bench/results/label_shift/{results.json,label_shift.md} (``--adapt``: results_adapt[_<method>].json,
label_shift_adapt[_<method>].md; ``--adapt-method`` other than mmd swaps the aligner of table 2; ``--tag T``
appends _T to the names).
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


# Where the estimators' source probabilities come from:
#   val-refit: the validation split scored by a probe refitted on train + val (it has seen those items);
#   val: the validation split scored by a probe trained on the train split only;
#   crossfit: out-of-fold probabilities of every source item (5 folds), target = the fold probes' average;
#   crossfit-full: the same out-of-fold source, target scored by the one probe refitted on all the source;
#   crossfit-perfold: the same out-of-fold source; each fold probe's target probabilities estimated on
#   their own (one calibration), the estimates averaged.
CALIBRATIONS = ("val-refit", "val", "crossfit", "crossfit-full", "crossfit-perfold")
ESTIMATORS = ("bbse", "rlls", "em", "bbse+em")
DEFAULT_CAL = "val"


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per item, each class dealt round-robin over the folds in a seeded order."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (start + np.arange(len(idx))) % folds
        start += len(idx)  # the next class continues where this one stopped, so folds stay even in size
    return fold


def cross_fitted_probabilities(x_source: np.ndarray, y_source: np.ndarray, x_target: np.ndarray, k: int, *,
                               folds: int = 5, C: float | None = None, seed: int = 0
                               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Out-of-fold probabilities of a linear probe for *every* source item, and the probe's target
    probabilities (the fold models' average), for the estimators to calibrate on all the source
    instead of a small held-out split.

    Each fold's probe is trained on the other folds with one ``C`` (chosen once, on the first fold,
    when not given) and never refitted on the items it scores, so the source probabilities are as
    confident as the target's: a probe scoring items it was trained on looks better than it is,
    and calibrating on that sharpens the target probabilities too.
    """
    import torch

    y = np.asarray(y_source, dtype=np.int64)
    xs, xt = np.asarray(x_source, dtype=np.float32), np.asarray(x_target, dtype=np.float32)
    fold = stratified_folds(y, folds, seed)
    oof = np.zeros((len(y), k))
    per_fold: list[np.ndarray] = []
    chosen = C
    for f in range(folds):
        held = fold == f
        if not held.any():
            continue
        cfg = LinearProbeConfig(refit_on_val=False, **({"Cs": (float(chosen),)} if chosen is not None else {}))
        probe, info = linear_probe(xs[~held], y[~held], xs[held], y[held], k, cfg, seed=seed)
        chosen = float(info["C"]) if chosen is None else chosen
        with torch.inference_mode():
            oof[held] = probe(torch.as_tensor(xs[held])).softmax(1).double().numpy()
            per_fold.append(probe(torch.as_tensor(xt)).softmax(1).double().numpy())
    return oof, np.mean(per_fold, axis=0), {"folds": folds, "C": chosen, "target_per_fold": per_fold}


def black_boxes(tr: np.ndarray, y_tr: np.ndarray, va: np.ndarray, y_va: np.ndarray, pool: np.ndarray, k: int
                ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """Per calibration source: (source probabilities, their labels, target pool probabilities, the
    proportions the target's model was trained under); and the deployed probe (refitted on all the
    source) with its training proportions."""
    import torch

    def proba(model, x):
        with torch.inference_mode():
            return model(torch.as_tensor(x)).softmax(1).double().numpy()

    refit, info = linear_probe(tr, y_tr, va, y_va, k, LinearProbeConfig())  # C on val, then train + val
    C = float(info["C"])
    train_only, _ = linear_probe(tr, y_tr, va, y_va, k, LinearProbeConfig(Cs=(C,), refit_on_val=False))
    xs, ys = np.concatenate([tr, va]), np.concatenate([y_tr, y_va])
    oof, pt_folds, cf = cross_fitted_probabilities(xs, ys, pool, k, C=C)
    p_all = np.bincount(ys, minlength=k) / len(ys)
    p_tr = np.bincount(y_tr, minlength=k) / len(y_tr)
    p_refit = proba(refit, pool)
    return {"val-refit": (proba(refit, va), y_va, p_refit, p_all),
            "val": (proba(train_only, va), y_va, proba(train_only, pool), p_tr),
            "crossfit": (oof, ys, pt_folds, p_all),
            "crossfit-full": (oof, ys, p_refit, p_all),
            "crossfit-perfold": (oof, ys, np.stack(cf["target_per_fold"]), p_all)}, (p_refit, p_all)


def multinomial_floor(q: np.ndarray, n: int, seed: int, draws: int = 4000) -> float:
    """The mean L1 between q and the shares of an n-item multinomial sample of q: the error of the
    best possible estimate of q from n labelled items (a reference line for the estimators)."""
    rng = np.random.default_rng(3000 + seed)
    return float(np.abs(rng.multinomial(n, q, size=draws) / n - q).sum(1).mean())


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
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    args = ap.parse_args()
    suffix = ("" if args.adapt_method == "mmd" else "_" + args.adapt_method.replace("-", "_")) + (
        f"_{args.tag}" if args.tag else "")
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
        # The black boxes for the estimators, one per calibration source (CALIBRATIONS).
        ys_all = np.concatenate([y["train"], y["val"]])
        cal, deployed = black_boxes(tr, y["train"], va, y["val"], pool, k)
        for skew in args.skews.split(","):
            for seed in seeds:
                q_draw = skewed(skew, k, seed)
                idx = resample(y_pool, q_draw, N_TARGET, seed)
                yt = y_pool[idx]
                truth = np.bincount(yt, minlength=k) / len(yt)
                row: dict = {"pair": pair, "skew": skew, "seed": seed, "true_proportions": truth.tolist(),
                             "drawn_proportions": q_draw.tolist(),
                             "source_proportions": (np.bincount(ys_all, minlength=k) / len(ys_all)).tolist(),
                             "multinomial_floor": multinomial_floor(q_draw, N_TARGET, seed),
                             "l1": {}, "probe_accuracy_fixed": {}, "proportions": {}, "warnings": {}}
                for cname, (ps, ys_c, pt, prior) in cal.items():
                    found: dict[str, np.ndarray | None] = {}
                    for method in ESTIMATORS:
                        if method == "bbse+em":
                            a, b = found["bbse"], found["em"]
                            q = None if a is None or b is None else (a + b) / 2
                        else:
                            qs = []
                            for pt_one in (pt if pt.ndim == 3 else pt[None]):
                                est = estimate_prior(method, ps, ys_c, pt_one[idx], source_prior=prior, bootstrap=0)
                                qs.append(est.target)
                                if est.warning:
                                    row["warnings"][f"{cname}/{method}"] = est.warning
                            q = None if any(v is None for v in qs) else np.mean(qs, axis=0)
                        found[method] = q
                        key = f"{cname}/{method}"
                        row["l1"][key] = float("nan") if q is None else float(np.abs(q - truth).sum())
                        row["proportions"][key] = None if q is None else q.tolist()
                        # every estimate corrects the same deployed probe (refitted on all the source)
                        p_dep, prior_dep = deployed
                        fixed = p_dep[idx] if q is None else reweight(p_dep[idx], np.maximum(q, 1e-6)
                                                                      / np.maximum(prior_dep, 1e-6))
                        row["probe_accuracy_fixed"][key] = float((fixed.argmax(1) == yt).mean())
                # the fields of table 2 and earlier result files: the default calibration
                for method in ("bbse", "em"):
                    row[f"l1_{method}"] = row["l1"][f"{DEFAULT_CAL}/{method}"]
                    row[f"probe_accuracy_{method}"] = row["probe_accuracy_fixed"][f"{DEFAULT_CAL}/{method}"]
                p_dep, prior_dep = deployed
                row["probe_accuracy"] = float((p_dep[idx].argmax(1) == yt).mean())
                row["probe_accuracy_oracle"] = float((reweight(p_dep[idx], truth / np.maximum(prior_dep, 1e-6))
                                                      .argmax(1) == yt).mean())
                if not args.adapt:
                    rows.append(row)
                    print(f"{pair} {skew} seed {seed}: floor {row['multinomial_floor']:.3f} | "
                          + " ".join(f"{key} {v:.3f}" for key, v in row["l1"].items()), flush=True)
                    (res_dir / f"results{suffix}.json").write_text(json.dumps(rows, indent=2, default=float))
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
                      + f" | kept {row['kept']} ({row['adapt_seconds']:.0f} s)", flush=True)
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
             "Proportion error (L1, sum over classes, against the realised shares of the target items) per "
             "estimator and calibration source (val-refit: validation split scored by the probe refitted on it; "
             "val: scored by a probe trained on the train split only; crossfit: out-of-fold probabilities of "
             "every source item, target scored by the fold probes' average; crossfit-full: the same, target "
             "scored by the one probe refitted on all the source; crossfit-perfold: each fold probe's target "
             "probabilities estimated on their own, one calibration, the estimates averaged). Floor: the mean L1 "
             "of the shares of a "
             f"{N_TARGET}-item multinomial sample of the drawn proportions.", "",
             "| pair | skew | calibration | " + " | ".join(f"L1 {m}" for m in ESTIMATORS) + " | floor |",
             "|---|---|---|" + "---|" * (len(ESTIMATORS) + 1)]
    for (pair, skew), rs in groups.items():
        for cname in CALIBRATIONS:
            if not all(f"{cname}/bbse" in r.get("l1", {}) for r in rs):
                continue
            lines.append(f"| {pair} | {skew} | {cname} | "
                         + " | ".join(_ms([r["l1"][f"{cname}/{m}"] for r in rs]) for m in ESTIMATORS)
                         + f" | {_ms([r['multinomial_floor'] for r in rs])} |")
    lines += ["", f"Target accuracy (%) of the probe refitted on all the source, without and with the prior "
              f"correction ({DEFAULT_CAL} calibration):", "",
              "| pair | skew | probe | + prior (BBSE) | + prior (EM) | + prior (BBSE+EM) | + true prior |",
              "|---|---|---|---|---|---|---|"]
    for (pair, skew), rs in groups.items():
        fixed = {m: _ms([r["probe_accuracy_fixed"][f"{DEFAULT_CAL}/{m}"] for r in rs], 100, 1)
                 for m in ("bbse", "em", "bbse+em")}
        lines.append(f"| {pair} | {skew} | {_ms([r['probe_accuracy'] for r in rs], 100, 1)} | {fixed['bbse']} "
                     f"| {fixed['em']} | {fixed['bbse+em']} | {_ms([r['probe_accuracy_oracle'] for r in rs], 100, 1)} |")
    if not adapt:
        (res_dir / f"label_shift{suffix}.md").write_text("\n".join(lines) + "\n")
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
