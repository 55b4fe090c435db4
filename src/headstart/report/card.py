"""The transfer card: what was reused, on what data, how, and what it bought (Markdown)."""

from __future__ import annotations

from typing import Any

from ..evaluation.intervals import gain_words, interval_words


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# How the strategies' choices read in the card.
_CHOSEN = {"chosen_strategy": "strategy", "chosen_lr": "learning rate", "C": "regularisation C", "best_epoch": "epoch (best on validation)",
           "trainable_params": "number of trained parameters", "adapter_params": "number of adapter parameters"}


def _calibration_section(cal: dict[str, Any] | None) -> list[str]:
    """ECE before / after temperature scaling and the reliability table (confidence vs accuracy)."""
    if not cal:
        return []
    lines = ["", "### Confidence (calibration)", ""]
    if cal.get("kept"):
        how = {"confidence matching": "set so that the mean confidence on the validation split equals its "
                                      "accuracy (a split of under 100 items)",
               "log-likelihood": "fitted by log-likelihood on the validation split"}.get(cal.get("method", ""),
                                                                                       "fitted on the validation split")
        lines.append(f"Temperature scaling (T = {cal['temperature']:.3g}, {how}; T below 1 sharpens the "
                     f"probabilities, above 1 softens them) lowered the validation log-loss "
                     f"{cal['val_nll_before']:.3f} -> {cal['val_nll_after']:.3f}.")
    else:
        lines.append(cal.get("reason", "Temperature scaling did not lower the validation log-loss, so it was not applied."))
    if "test_ece_before" in cal:
        lines.append(f"Expected calibration error on the test split: {cal['test_ece_before']:.3f} before, "
                     f"{cal['test_ece_after']:.3f} after (0 = confidences match accuracy).")
        lines += ["", "| confidence bin | n | mean confidence | accuracy (after) |", "|---|---|---|---|"]
        lines += [f"| {b['lo']:.1f}-{b['hi']:.1f} | {b['n']} | {b['confidence']:.2f} | {b['accuracy']:.2f} |"
                  for b in cal.get("reliability_after", [])]
    return lines


def _ci(interval: list[float] | None) -> str:
    return f" ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})" if interval else ""


def gain_sentence(gain: float, baseline_name: str, interval: list[float] | None = None) -> str:
    points = 100 * gain
    if gain < 0 and interval is not None and interval[1] >= 0:
        return (f"The pre-trained backbone scored {-points:.1f} points below the baseline ({baseline_name}) on this "
                "test split, but the interval includes 0: no evidence of negative transfer yet.")
    if gain < 0:
        return (f"WARNING: negative transfer. The pre-trained backbone is {-points:.1f} points *worse* than "
                f"the baseline ({baseline_name}). Prefer the baseline, or try another backbone or strategy.")
    return f"Transfer gain: {points:+.1f} accuracy points over the baseline ({baseline_name})."


def _search_section(search: list[dict[str, Any]] | None) -> list[str]:
    """``auto``'s search: every candidate run, its validation score (and its score on folds of train +
    val, when the validation split was small) with a 95% interval, time, fate."""
    if not search:
        return []

    def pct(value: float | None, ci: list[float] | None) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.1f}%" + (f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")

    folds = any("cv_accuracy" in r for r in search)
    lines = ["", "### The search (`auto`)", "",
             "| candidate | learning rate | epochs | validation accuracy (95% interval) | "
             + ("on folds of train + val (95% interval) | " if folds else "")
             + ("seconds (run + folds)" if folds else "seconds") + " | outcome |",
             "|---|---|---|---|" + ("---|" if folds else "") + "---|---|"]
    for r in search:
        lr = "-" if r.get("lr") is None else f"{r['lr']:.2g}"
        outcome = r["status"] + (f": {r['note']}" if r.get("note") else "")
        cv = f"{pct(r.get('cv_accuracy'), r.get('cv_ci95'))} | " if folds else ""
        seconds = r.get("seconds", 0) + r.get("cv_seconds", 0)
        lines.append(f"| {r['strategy']} | {lr} | {r.get('epochs') or '-'} | {pct(r.get('val_accuracy'), r.get('ci95'))}"
                     f" | {cv}{seconds:.1f} | {outcome} |")
    return lines


def _domain_section(details: dict[str, Any], target: dict[str, Any] | None) -> list[str]:
    """Gap before / after, every method's validator readings, and what was kept."""
    if "summary" not in details or "gap_before" not in details:
        return []
    lines = ["", "## Domain adaptation"]
    if target:
        lines.append(f"- Target data: `{target.get('source', '?')}` ({target.get('n', '?')} examples, "
                     f"{'labelled: labels never trained on; they scored the model and guarded the choice, so its target accuracy is optimistic' if target.get('labelled') else 'unlabelled'})")
    before, after = details.get("gap_before") or {}, details.get("gap_after") or {}
    if before and after:
        lines.append(f"- Gap, proxy A-distance (0 = same, 2 = separable): {before['pad']:.2f} on the backbone's "
                     f"features, {after['pad']:.2f} in the kept model's bottleneck")
    lines.append(f"- Kept: **{details.get('chosen', '?')}**")
    summary = details["summary"]
    keys = [k for k in next(iter(summary.values())) if k != "source_val_accuracy"]
    lines += ["", "| method | source val accuracy | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for method, row in summary.items():
        seeds = sum(r.get("method") == method for r in details.get("runs", []))  # runs of this method
        cells = [f"{row[k][0]:.3f}" + (f" +- {row[k][1]:.3f}" if seeds > 1 else "") for k in keys]
        lines.append(f"| {method} | {_pct(row['source_val_accuracy'][0])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Validators (no target labels): im = information maximisation, rv = reverse validation, "
                 "snd = soft neighbourhood density (reported only); higher is better.")
    return lines


def render_card(meta: dict[str, Any]) -> str:
    card = meta["backbone"]["card"]
    data = meta.get("data", {})
    strategy = meta.get("strategy", {})
    metrics = meta.get("metrics", {})
    test = metrics.get("test", {})
    base = metrics.get("baseline", {})
    base_test = base.get("test", {})
    spec = card["input"]
    if card["modality"] == "image":
        prep = (f"resize shorter side to {round(spec['image_size'] / spec['crop_pct'])} px ({spec['interpolation']}), "
                f"centre-crop {spec['image_size']} px, normalise mean {_floats(spec['mean'])} std {_floats(spec['std'])}")
    else:
        prep = f"tokenise, truncate at {spec['max_length']} tokens"
    lines = [
        f"# Transfer card: {card['name']} -> {len(meta['labels'])} classes",
        "",
        "## What was reused",
        f"- Backbone: **{card['name']}** ({card['description']})",
        f"- Source: {card['source']}; licence: {card['license']}",
        f"- Parameters: {card['num_params']:,}; feature dimension: {card['feature_dim']}",
        f"- Preprocessing (travels with the weights): {prep}",
        f"- Backbone weights were {'fine-tuned' if meta['backbone']['trained'] else 'kept frozen'} "
        f"(fingerprint `{meta['backbone']['fingerprint']}`)",
        "",
        "## On what data",
        f"- Source: `{data.get('source', '?')}` ({data.get('modality', card['modality'])}, {data.get('n', '?')} examples)",
        f"- Classes: {', '.join(f'{k} ({v})' for k, v in data.get('class_counts', {}).items())}",
        f"- Splits: {', '.join(f'{k} {v}' for k, v in data.get('splits', {}).items())} (seed {meta.get('seed', '?')}, "
        f"{data.get('split_source', 'stratified')})",
    ]
    for f in data.get("findings", []):
        if f["level"] != "info":
            lines.append(f"- Data {f['level']}: {f['message']}")
    pool = data.get("unlabelled")
    if pool:
        lines.append(f"- Unlabelled: `{pool['source']}` ({pool['n']} items, after leaving out any that are also "
                     "labelled), for the pseudo-labels")
    screen = data.get("label_screen")
    if screen:
        lines.append(f"- Label screen (3-fold probe + confident learning): {screen['count']} of {screen['n']} training "
                     f"items ({100 * screen['share']:.1f}%) look mislabelled"
                     + (f"; the worst: {', '.join(map(str, screen['indices']))}" if screen["count"] else ""))
    selection = meta.get("backbone_selection")
    if selection:
        lines += ["", "## How the backbone was chosen",
                  f"- Ranked by {selection['primary']} on the training split (no fine-tuning, no test data):"]
        for i, name in enumerate(selection["order"], 1):
            value = selection["scores"][name][selection["primary"]]
            lines.append(f"  {i}. {name}: {value:.4g}")
    lines += ["", "## How", f"- Strategy: **{strategy.get('type', '?')}**"]
    for key, value in strategy.get("chosen", {}).items():
        shown = f"{value:.3g}" if isinstance(value, float) else value  # C = 0.000316, not 0.00031622776601683794
        lines.append(f"- Chosen {_CHOSEN.get(key, key)}: {shown}")
    if strategy.get("reasons"):
        lines += [f"- Why: {r}" for r in strategy["reasons"]]
    lines += _search_section(strategy.get("details", {}).get("search"))
    lines += _domain_section(strategy.get("details", {}), data.get("target"))
    ci = test.get("ci95", {})
    lines += ["", "## What it bought (held-out test split)", "",
              "| | accuracy | macro-F1 | ECE |", "|---|---|---|---|",
              f"| this model | {_pct(test.get('accuracy'))}{_ci(ci.get('accuracy'))} | "
              f"{_pct(test.get('macro_f1'))}{_ci(ci.get('macro_f1'))} | {test.get('ece', float('nan')):.3f} |"]
    if base_test:
        lines.append(f"| baseline: {base.get('name')} | {_pct(base_test.get('accuracy'))} | "
                     f"{_pct(base_test.get('macro_f1'))} | {base_test.get('ece', float('nan')):.3f} |")
    target = metrics.get("target")
    if target:
        lines.append(f"| this model on the target domain (optimistic: its labels also guarded the choice) | "
                     f"{_pct(target.get('accuracy'))} | "
                     f"{_pct(target.get('macro_f1'))} | {target.get('ece', float('nan')):.3f} |")
    if meta.get("strategy", {}).get("details", {}).get("test_scored_without_prior_correction"):
        lines += ["", "The test split is the source's, with the source's class proportions: it is scored without the "
                      "correction to the target's class proportions that the saved model applies."]
    if base_test:
        gain = metrics["transfer_gain"]
        lines += ["", gain_sentence(gain["accuracy"], base.get("name", "baseline"), gain.get("ci95", {}).get("accuracy"))
                  + (" " + gain_words(gain["accuracy"], gain["ci95"]["accuracy"]) if "ci95" in gain else "")]
    if ci.get("accuracy"):
        small = interval_words(int(test.get("n", 0)), ci["accuracy"])
        lines += ["", "Intervals are bootstrap 95% intervals over the test items."] + ([f"**{small}**"] if small else [])
    lines += _calibration_section(meta.get("calibration"))
    if test.get("per_class"):
        lines += ["", "### Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, s in test["per_class"].items():
            lines.append(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |")
    versions = meta.get("versions", {})
    lines += ["", "## Limits", "- Scores come from one held-out split of the data above; data from another "
              "source (camera, hospital, period) can score lower. Check with `headstart eval` on such data.",
              "", "## Reproduce", f"- `{meta.get('command', 'headstart fit ...')}`",
              f"- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}", ""]
    return "\n".join(lines)
