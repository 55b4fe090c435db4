"""How far apart are two feature distributions? Pure functions plus a plot.

- :func:`mmd_test`: squared maximum mean discrepancy with a Gaussian kernel (bandwidth by the
  median heuristic) and a permutation test for "the two samples come from one distribution".
- :func:`proxy_a_distance`: Ben-David et al.'s proxy A-distance, 2 (1 - 2 err), from the
  cross-validated error of a logistic-regression domain classifier: 0 = indistinguishable,
  2 = perfectly separable.
- :func:`per_class_shift`: when both sides have labels, the shift of each class's features (MMD
  between the class's source and target examples) and of the class proportions;
  :func:`per_class_left_out` names the classes it leaves out and why, and :func:`unseen_classes`
  the target's classes that the source lacks (a shift no model trained on the source can handle).
- :func:`plot_projection`: a 2-D t-SNE of both samples, source vs target, coloured by class.
- :func:`label_shift_report`: with source labels, the target's class proportions estimated
  without its labels (:mod:`.label_shift`), and whether the inputs still differ once the source
  is re-weighted to them: in words, is the shift in the labels, the inputs, or both.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

# A permutation p-value is at least 1 / (permutations + 1): with fewer than 19 it can never reach 0.05.
MIN_PERMUTATIONS = 19
# Fewer items a side leave the MMD test and the domain classifier without the power to find a gap,
# so "no measurable gap" would mean nothing; below it the verdict says the gap cannot be judged.
MIN_GAP_ITEMS = 20
MIN_CLASS_ITEMS = 2  # items of a class on each side for its per-class MMD


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = 200, max_n: int = 500,
             seed: int = 0) -> dict[str, float]:
    """MMD^2 (biased) between ``x`` and ``y`` and its permutation p-value.

    At most ``max_n`` rows of each side (a seeded subsample): the kernel matrix is computed once
    and only the labels are permuted, so 200 permutations cost little more than one MMD.
    ``permutations=0`` computes the statistic alone (``p_value`` None: no test was run).
    """
    import torch  # imported here so that the CLI can read this module's limits without loading torch

    if permutations < 0:
        raise ConfigError(f"`permutations` must be >= 0, got {permutations}.",
                          fix=f"use 0 for the statistic alone, or at least {MIN_PERMUTATIONS} for a test.")
    rng = np.random.default_rng(seed)
    xs, ys = _subsample(x, max_n, rng), _subsample(y, max_n, rng)
    z = torch.as_tensor(np.concatenate([xs, ys]), dtype=torch.float64)
    d2 = torch.cdist(z, z).pow(2)
    off = d2[~torch.eye(len(z), dtype=torch.bool)]
    bandwidth = float(off.median()) or 1.0
    k = torch.exp(-d2 / bandwidth)
    n = len(xs)

    def stat(first: torch.Tensor) -> float:
        a, b = first, ~first
        return float(k[a][:, a].mean() + k[b][:, b].mean() - 2 * k[a][:, b].mean())

    mask = torch.zeros(len(z), dtype=torch.bool)
    mask[:n] = True
    observed = stat(mask)
    g = torch.Generator().manual_seed(seed)
    count = 0
    for _ in range(permutations):
        perm = mask[torch.randperm(len(z), generator=g)]
        count += stat(perm) >= observed
    p_value = (count + 1) / (permutations + 1) if permutations else None
    return {"mmd2": observed, "p_value": p_value, "n_source": n, "n_target": len(ys),
            "permutations": permutations}


def proxy_a_distance(x: np.ndarray, y: np.ndarray, *, max_n: int = 1000, seed: int = 0) -> dict[str, float]:
    """2 (1 - 2 err) with err the 5-fold cross-validated error of a balanced domain classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(x), len(y), max_n)
    xs, ys = _subsample(x, n, rng), _subsample(y, n, rng)
    z = np.concatenate([xs, ys])
    d = np.r_[np.zeros(len(xs)), np.ones(len(ys))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = float(cross_val_score(clf, z, d, cv=min(5, n), scoring="accuracy").mean())
    err = 1.0 - acc
    return {"pad": float(np.clip(2 * (1 - 2 * err), 0.0, 2.0)), "domain_classifier_accuracy": acc, "n_per_domain": n}


def per_class_shift(xs: np.ndarray, ys: list[str], xt: np.ndarray, yt: list[str], *, seed: int = 0) -> list[dict[str, Any]]:
    """For each class on both sides: MMD^2 between its source and target features, and its share
    of each domain (a change in shares is label shift)."""
    rows = []
    ys_a, yt_a = np.asarray(ys), np.asarray(yt)
    for c in sorted(set(ys) & set(yt)):
        a, b = xs[ys_a == c], xt[yt_a == c]
        if len(a) < MIN_CLASS_ITEMS or len(b) < MIN_CLASS_ITEMS:
            continue  # named by per_class_left_out
        rows.append({"class": c, "mmd2": mmd_test(a, b, permutations=0, max_n=200, seed=seed)["mmd2"],
                     "source_share": len(a) / len(xs), "target_share": len(b) / len(xt)})
    return rows


def per_class_left_out(ys: list[str], yt: list[str]) -> list[dict[str, Any]]:
    """The classes :func:`per_class_shift` has no row for, each with its item counts and why."""
    n_s, n_t = Counter(ys), Counter(yt)
    rows = []
    for c in sorted(set(n_s) | set(n_t)):
        a, b = n_s.get(c, 0), n_t.get(c, 0)
        if a >= MIN_CLASS_ITEMS and b >= MIN_CLASS_ITEMS:
            continue
        if not a:
            why = "not in the source"
        elif not b:
            why = "not in the target"
        else:
            why = f"fewer than {MIN_CLASS_ITEMS} items on a side"
        rows.append({"class": c, "source_items": a, "target_items": b, "why": why})
    return rows


def unseen_classes(ys: list[str], yt: list[str]) -> dict[str, Any] | None:
    """The target's labelled classes that the source lacks, with their counts and share of the
    target, and a warning in words; None when there are none."""
    known = set(ys)
    counts = Counter(v for v in yt if v not in known)
    if not counts:
        return None
    share = sum(counts.values()) / len(yt)
    named = ", ".join(f"{c} ({m} item{'s' if m > 1 else ''})" for c, m in sorted(counts.items()))
    return {"classes": sorted(counts), "target_items": dict(sorted(counts.items())), "target_share": share,
            "words": f"{named}, {100 * share:.0f}% of the target",
            "warning": (f"the target holds class(es) the source lacks: {named}, {100 * share:.0f}% of the target. "
                        "A model trained on the source cannot predict them, and neither a prior correction nor "
                        "aligning the inputs changes that: add labelled examples of them to the source")}


def verdict(pad: float, p_value: float | None, *, n_source: int | None = None, n_target: int | None = None,
            unseen: dict[str, Any] | None = None) -> str:
    """The gap in plain words, from the proxy A-distance and the MMD test.

    ``unseen`` (from :func:`unseen_classes`): classes of the target the source lacks, which decide
    the verdict whatever the features say. With fewer than MIN_GAP_ITEMS items on a side the
    measures have too little power for "no gap" to mean anything, so the verdict says so.
    ``p_value`` None: no test was run.
    """
    measured = (f"proxy A-distance {pad:.2f} of 2"
                + (f", MMD test p = {p_value:.2f}" if p_value is not None else ", no MMD test run"))
    if unseen:
        return (f"a shift no adaptation fixes: the target holds class(es) the source lacks ({unseen['words']}), "
                f"which a model trained on the source cannot predict; add labelled examples of them to the source "
                f"({measured})")
    small = [f"{n} {side}" for n, side in ((n_source, "source"), (n_target, "target"))
             if n is not None and n < MIN_GAP_ITEMS]
    if small:
        return (f"the gap cannot be judged on {' and '.join(small)} items: with so few the MMD test and the "
                f"domain classifier cannot find a gap even where there is one ({measured}); use at least "
                f"{MIN_GAP_ITEMS} items a side")
    if p_value is None:
        return f"no MMD test run (0 permutations); proxy A-distance {pad:.2f} of 2"
    if p_value > 0.05:
        return ("no measurable gap: the MMD test cannot tell the two apart (p = %.2f); "
                "train on the source and deploy" % p_value)
    if pad < 0.5:
        return f"a small gap (proxy A-distance {pad:.2f} of 2): source-only training should transfer well"
    if pad < 1.5:
        return (f"a moderate gap (proxy A-distance {pad:.2f} of 2): expect some loss on the target; "
                "domain adaptation may recover part of it")
    return (f"a large gap (proxy A-distance {pad:.2f} of 2; a classifier tells the domains apart almost "
            "always): expect a large loss on the target; adapt with unlabelled target data, and label some target examples")


def verdict_with_shift(verdict_words: str, shift_words: str) -> str:
    """The feature measures see the class mixture, which a change of proportions barely moves: a
    verdict of no or a small gap gets a "but" when the class proportions moved."""
    if shift_words.startswith(("in the labels", "both")) and verdict_words.startswith(("no measurable gap",
                                                                                      "a small gap")):
        return (verdict_words + "; but the class proportions moved (see Shift), which the features barely show: "
                "correct for them (domain-adapt's prior correction) or the source's common classes will be "
                "over-predicted")
    return verdict_words


def plot_projection(xs: np.ndarray, xt: np.ndarray, path: str | Path, *, ys: list[str] | None = None,
                    yt: list[str] | None = None, max_n: int = 600, seed: int = 0,
                    title: str = "source vs target") -> Path:
    """t-SNE of both samples (after PCA to 50 dims) to ``path`` (PNG): circles = source,
    crosses = target, one colour per class (grey when a side has no labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    i_s = rng.choice(len(xs), min(len(xs), max_n), replace=False)
    i_t = rng.choice(len(xt), min(len(xt), max_n), replace=False)
    z = np.concatenate([xs[i_s], xt[i_t]]).astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    z = PCA(n_components=min(50, z.shape[1], len(z) - 1), random_state=seed).fit_transform(z)
    e = TSNE(n_components=2, perplexity=min(30.0, (len(z) - 1) / 3), init="pca", random_state=seed).fit_transform(z)
    es, et = e[: len(i_s)], e[len(i_s):]
    classes = sorted(set(ys or []) | set(yt or []))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for pts, labels, marker, name in ((es, ys, "o", "source"), (et, yt, "x", "target")):
        idx = i_s if name == "source" else i_t
        cols = [colour[labels[i]] for i in idx] if labels else "0.5"
        ax.scatter(pts[:, 0], pts[:, 1], c=cols, marker=marker, s=12, alpha=0.7, linewidths=0.8, label=name)
    handles = [plt.Line2D([], [], marker="o", ls="", color="k", label="source"),
               plt.Line2D([], [], marker="x", ls="", color="k", label="target")]
    handles += [plt.Line2D([], [], marker="s", ls="", color=colour[c], label=c) for c in classes[:20]]
    ax.legend(handles=handles, fontsize=7, loc="best", ncol=2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    from .._io import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def measure_gap(xs: np.ndarray, xt: np.ndarray, *, ys: list[str] | None = None, yt: list[str] | None = None,
                seed: int = 0, permutations: int = 200) -> dict[str, Any]:
    """Every measure at once, with the verdict. With labels on both sides also the per-class shift,
    the classes it leaves out (``per_class_left_out``) and the target's classes the source lacks
    (``unseen_classes``, None when there are none)."""
    mmd = mmd_test(xs, xt, permutations=permutations, seed=seed)
    pad = proxy_a_distance(xs, xt, seed=seed)
    unseen = unseen_classes(ys, yt) if ys is not None and yt is not None else None
    out: dict[str, Any] = {"mmd": mmd, "proxy_a_distance": pad,
                           "verdict": verdict(pad["pad"], mmd["p_value"], n_source=len(xs), n_target=len(xt),
                                              unseen=unseen)}
    if ys is not None and yt is not None:
        out["per_class"] = per_class_shift(xs, ys, xt, yt, seed=seed)
        out["per_class_left_out"] = per_class_left_out(ys, yt)
        out["unseen_classes"] = unseen
    return out


def label_shift_report(xs: np.ndarray, ys: list[str], xt: np.ndarray, *, estimator: str = "em", bootstrap: int = 200,
                       seed: int = 0, permutations: int = 200, yt: list[str] | None = None) -> dict[str, Any]:
    """The target's class proportions against the source's, and the shift in words.

    A linear probe on 70% of the source (stratified, seeded) is the black box; its probabilities
    on the other 30%, which it never trained on, and on the target feed the estimator. The source is then subsampled,
    without replacement, to the estimated proportions (:func:`~.label_shift.subsample_to_shares`; a
    resample with replacement repeats items, which the domain classifier recognises, so a pure label
    shift read as an input shift): if the MMD test and the proxy A-distance still tell it from the
    target, the inputs differ beyond what the labels explain. With fewer than MIN_GAP_ITEMS items in
    that subsample the question is left open (``input_shift`` None). ``trust`` holds the two signs that say
    whether the estimate can be relied on (see
    :func:`~headstart.domain.validators.proportions_trusted`). ``yt``: the target's labels when it
    has them (the estimate never reads them); classes among them that the source lacks are named
    in ``unseen_classes`` and lead the words, since no re-weighting of the source covers them.
    With ``permutations=0`` the inputs count as still different when the proxy A-distance alone
    says so.
    """
    import torch

    from ..train.linear_probe import LinearProbeConfig, linear_probe
    from .label_shift import describe_shift, estimate_prior, subsample_to_shares

    names = sorted(set(ys))
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[v] for v in ys], dtype=np.int64)
    k = len(names)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(y == c))
        held[idx[: int(round(0.3 * len(idx)))]] = True
    source_shares = np.bincount(y, minlength=k) / len(y)
    unseen = unseen_classes(ys, yt) if yt is not None else None
    out: dict[str, Any] = {"estimator": estimator, "classes": names, "source_proportions": source_shares.tolist(),
                           "unseen_classes": unseen}
    if k < 2 or held.all() or not held.any() or len(np.unique(y[~held])) < k:
        out["warning"] = (f"no label-shift estimate: the source has {k} class(es) and too few items per class to "
                          "hold some out")
        out["in_words"] = describe_shift(None, None, names, unseen=unseen).replace("the source has no labels",
                                                                                   out["warning"])
        return out
    # Not refitted on the held-out part: a probe scoring items it was trained on looks more certain
    # than it is on new data, and calibrating on that skews the estimate (with a Dirichlet(0.5)
    # draw of BBC News's class proportions, EM's error grew from 0.02 to 0.06).
    probe, _ = linear_probe(xs[~held], y[~held], xs[held], y[held], k, LinearProbeConfig(refit_on_val=False))
    with torch.inference_mode():
        p_held = probe(torch.as_tensor(xs[held], dtype=torch.float32)).softmax(1).double().numpy()
        p_t = probe(torch.as_tensor(xt, dtype=torch.float32)).softmax(1).double().numpy()
    est = estimate_prior(estimator, p_held, y[held], p_t, source_prior=source_shares, bootstrap=bootstrap, seed=seed,
                         class_names=names)
    out.update(est.to_dict())
    out["source_proportions"] = source_shares.tolist()
    input_shift: bool | None = None
    trusted: bool | None = None
    if est.ok:
        # The two label-free signs domain-adapt reads before it corrects for the estimate.
        from .self_training import mixture_explained_share
        from .validators import proportions_trusted

        _, mixture = mixture_explained_share(xs, y, xt, k)
        trusted, out["trust"] = proportions_trusted(p_held, p_t, est.target, mixture)
        idx = subsample_to_shares(y, est.target, seed=seed)  # type: ignore[arg-type]
        if len(idx) >= MIN_GAP_ITEMS:
            mmd = mmd_test(xs[idx], xt, permutations=permutations, seed=seed)
            pad = proxy_a_distance(xs[idx], xt, seed=seed)
            input_shift = bool((mmd["p_value"] is None or mmd["p_value"] <= 0.05) and pad["pad"] >= 0.5)
            out["after_reweighting"] = {"mmd2": mmd["mmd2"], "p_value": mmd["p_value"], "pad": pad["pad"],
                                        "n_source": int(len(idx))}
        else:
            out["after_reweighting"] = {"n_source": int(len(idx)), "note": (
                f"only {len(idx)} source items can be drawn without repeats at the estimated proportions, fewer "
                f"than {MIN_GAP_ITEMS}, so whether the inputs differ as well is not judged")}
    out["input_shift"] = input_shift
    out["in_words"] = describe_shift(est, input_shift, names, trust=out.get("trust"), unseen=unseen)
    return out
