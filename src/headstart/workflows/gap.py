"""``gap``: the library call behind ``headstart gap``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backbones import create_backbone
from ..data import load_data
from ..errors import ConfigError, DataError
from ..features import extract_features_many
from ..domain.gap import MIN_PERMUTATIONS, label_shift_report, measure_gap, plot_projection, verdict_with_shift
from ..domain.label_shift import MIN_BOOTSTRAP, SHIFT_ESTIMATORS
from .pipeline import backbone_name, check_backbone_modality


def gap(source: Any, target: Any, *, backbone: str | None = None, out: str | Path | None = None,
        permutations: int = 200, seed: int = 0, device: str | None = None, cache_dir: str | Path | None = None,
        estimator: str = "em", bootstrap: int = 200,
        progress: bool = True, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Features of both sets through ``backbone`` (cached), then every gap measure and a verdict.

    Labels are optional on both sides; with labels on both, the per-class shift is reported too.
    With source labels, the target's class proportions are estimated without its labels
    (``estimator``, a name in ``SHIFT_ESTIMATORS``, with ``bootstrap`` resamples for the intervals:
    0 for none, else at least ``MIN_BOOTSTRAP``) and the shift is put in words: in the labels, the
    inputs, or both. ``permutations``: at least ``MIN_PERMUTATIONS``, the fewest whose p-value can
    reach 0.05.
    With ``out``: ``gap.json``, ``gap.md`` and ``gap.png`` (t-SNE, source vs target, by class).
    """
    src = load_data(source, labelled=None)
    tgt = load_data(target, labelled=None)
    for name, d in (("source", src), ("target", tgt)):
        if len(d) < 2:
            raise DataError(f"The {name} {d.source} has {len(d)} example(s); the gap needs at least 2 on each side.",
                            fix=f"point the {name} at a folder or table with data in it.")
    if src.modality != tgt.modality:
        raise DataError(f"The source {src.source} holds {src.modality}s but the target {tgt.source} holds "
                        f"{tgt.modality}s.", fix="compare two image sets or two text sets.")
    SHIFT_ESTIMATORS.get(estimator)  # an unknown name fails before any feature is extracted
    if bootstrap < 0 or 0 < bootstrap < MIN_BOOTSTRAP:
        raise ConfigError(f"`bootstrap` must be 0 (no intervals) or at least {MIN_BOOTSTRAP}, got {bootstrap}: fewer "
                          "resamples give no percentile interval.", fix="use e.g. --bootstrap 200 (0 = no intervals).")
    if permutations < MIN_PERMUTATIONS:
        raise ConfigError(f"`permutations` must be at least {MIN_PERMUTATIONS}, got {permutations}: a permutation "
                          f"p-value is at least 1 / (permutations + 1), so with fewer it can never reach 0.05.",
                          fix="use e.g. --permutations 200.")
    name = backbone_name(backbone, src.modality)
    bb = create_backbone(name)
    check_backbone_modality(bb, name, src.modality)
    log(f"Features of {len(src)} source and {len(tgt)} target {src.modality}s with {bb.card.name}")
    xs, xt = extract_features_many(bb, [src, tgt], cache_dir=cache_dir, device=device, progress=progress)
    log(f"MMD permutation test ({permutations} permutations) and proxy A-distance")
    result = measure_gap(xs, xt, ys=src.labels, yt=tgt.labels, seed=seed, permutations=permutations)
    if src.labels is not None:
        log(f"Label shift: the target's class proportions by {estimator}, {bootstrap} bootstrap resamples")
        result["label_shift"] = label_shift_report(xs, src.labels, xt, estimator=estimator, bootstrap=bootstrap,
                                                   seed=seed, permutations=permutations, yt=tgt.labels)
        result["label_shift"]["bootstrap"] = bootstrap
        result["verdict"] = verdict_with_shift(result["verdict"], result["label_shift"].get("in_words", ""))
    result.update({"source": src.source, "target": tgt.source, "backbone": bb.card.name,
                   "n_source": len(src), "n_target": len(tgt)})
    if out is not None:
        from .._io import write_json_atomic, write_text_atomic

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        plot_projection(xs, xt, folder / "gap.png", ys=src.labels, yt=tgt.labels, seed=seed,
                        title=f"{Path(str(src.source)).name} (o) vs {Path(str(tgt.source)).name} (x), {bb.card.name}")
        write_json_atomic(folder / "gap.json", result)
        write_text_atomic(folder / "gap.md", render(result))
        result["files"] = [str(folder / n) for n in ("gap.json", "gap.md", "gap.png")]
    return result


def render(result: dict[str, Any]) -> str:
    m, pad = result["mmd"], result["proxy_a_distance"]
    lines = [f"# Domain gap: {result['source']} -> {result['target']}", "",
             f"Backbone: {result['backbone']}; {result['n_source']} source and {result['n_target']} target examples.", "",
             f"- MMD^2 (Gaussian kernel, median bandwidth): {m['mmd2']:.4f}; permutation p-value {m['p_value']:.3f}",
             f"- Proxy A-distance: {pad['pad']:.2f} of 2 (domain classifier accuracy "
             f"{100 * pad['domain_classifier_accuracy']:.1f}%)",
             f"- Verdict: {result['verdict']}", ""]
    if result.get("unseen_classes"):
        lines += [f"**Warning**: {result['unseen_classes']['warning']}.", ""]
    if result.get("per_class"):
        lines += ["| class | MMD^2 | source share | target share |", "|---|---|---|---|"]
        lines += [f"| {r['class']} | {r['mmd2']:.4f} | {100 * r['source_share']:.1f}% | {100 * r['target_share']:.1f}% |"
                  for r in result["per_class"]]
    if result.get("per_class_left_out"):
        lines += ["", "Left out of the per-class table (its MMD needs at least 2 items of the class a side): "
                  + left_out_words(result["per_class_left_out"]) + "."]
    shift = result.get("label_shift")
    if shift:
        lines += ["", "## Class proportions", ""]
        if shift.get("target") is not None:
            interval = shift.get("interval")
            if interval:
                level = round(100 * shift.get("level", 0.95))
                lines += [f"Estimated without target labels ({shift['estimator']}), {level}% bootstrap intervals "
                          f"({shift.get('bootstrap_draws', '?')} resamples). {basis_words(shift)}".rstrip(), "",
                          "| class | source | target (estimated) | interval |", "|---|---|---|---|"]
            else:
                why = ("--bootstrap 0" if not shift.get("bootstrap") else shift.get("interval_note", "no resamples"))
                lines += [f"Estimated without target labels ({shift['estimator']}); no intervals ({why}). "
                          f"{basis_words(shift)}".rstrip(), "",
                          "| class | source | target (estimated) |", "|---|---|---|"]
            for i, c in enumerate(shift["classes"]):
                row = f"| {c} | {100 * shift['source_proportions'][i]:.1f}% | {100 * shift['target'][i]:.1f}% |"
                if interval:
                    row += f" {100 * interval[i][0]:.1f}-{100 * interval[i][1]:.1f}% |"
                lines.append(row)
        elif shift.get("warning"):
            lines.append(f"- {shift['warning']}")
        trust = shift.get("trust")
        if trust:
            lines += ["", f"- Estimate {'trusted' if trust['trusted'] else 'not trusted'}: the classifier's mean "
                      f"confidence {confidence_words(trust['confidence_drop'])} on the target (a drop of at most "
                      f"{trust['max_confidence_drop']:.2f} is allowed); the estimate is L1 {trust['mixture_l1']:.2f} "
                      f"from the class mixture of the target's mean features (at most {trust['max_mixture_l1']:.2f})."]
        lines += ["", f"- Shift: {shift['in_words']}"]
    lines += ["", "![source vs target](gap.png)", ""]
    return "\n".join(lines)


def confidence_words(drop: float) -> str:
    """A change of mean confidence in words: "drops by 0.05", "rises by 0.01" (never "drops by -0.01")."""
    if abs(drop) < 0.005:
        return "stays the same (within 0.01)"
    return f"drops by {drop:.2f}" if drop > 0 else f"rises by {-drop:.2f}"


def basis_words(shift: dict[str, Any]) -> str:
    """How many items the estimate rests on and, with intervals, its sampling error at that size."""
    if shift.get("n_target") is None:
        return ""
    words = (f"It rests on {shift['n_target']} target items and {shift.get('n_source', '?')} held-out source items "
             "(the probe's validation split).")
    if shift.get("bootstrap_l1") is not None:
        words += (f" At this size the bootstrap puts its sampling error at about L1 {shift['bootstrap_l1']:.2f} "
                  "(the median sum over classes of |resampled - estimated share|); a shift of the inputs adds bias "
                  "on top of that.")
    return words


def left_out_words(rows: list[dict[str, Any]]) -> str:
    """The per-class table's left-out classes in words: name, item counts and why."""
    return "; ".join(f"{r['class']} ({r['why']}: {r['source_items']} source, {r['target_items']} target)" for r in rows)
