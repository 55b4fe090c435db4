"""The run report: one self-contained HTML file (styles inline, figures as base64 PNG, no script,
nothing fetched) that someone who does not code can open, read and pass on.

:func:`render_report` takes plain data (the model's ``headstart.json`` record, the evaluation,
the explained mistakes and the transfer card) and returns the page; gathering that data is the
workflow's job (``headstart.workflows.report``).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import Any

import numpy as np


@dataclass
class Mistake:
    """One confidently wrong test item, with its explanation already rendered."""

    item: str
    true_label: str
    predicted: str
    confidence: float
    method: str = ""
    image_png: bytes | None = None    # the item as the model saw it
    overlay_png: bytes | None = None  # the evidence for the (wrong) prediction laid over it
    words_html: str = ""              # a text with its words shaded (already escaped)
    note: str = ""


@dataclass
class ReportInputs:
    meta: dict[str, Any]                        # headstart.json
    evaluation: dict[str, Any]                  # classification_metrics (+ ci95) on the data shown
    evaluated_on: str                           # "the held-out test split of ..." or another data set
    reliability: list[dict[str, float]] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)
    mistakes_note: str = ""
    card: str = ""                              # transfer_card.md
    baseline: dict[str, Any] | None = None      # the baseline's metrics on the same items, when known
    gain: dict[str, Any] | None = None


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(interval: list[float] | None) -> str:
    return f" <span class='note'>(95% interval {100 * interval[0]:.1f}–{100 * interval[1]:.1f})</span>" if interval else ""


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{png_data_uri(png)}" alt="{_e(alt)}"{w}>'


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(matrix: list[list[int]], labels: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    k = len(labels)
    side = min(9.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side, side))
    rows = m / np.clip(m.sum(1, keepdims=True), 1, None)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), [s[:14] for s in labels], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), [s[:14] for s in labels], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    return _figure_png(fig)


def reliability_png(bins: list[dict[str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect")
    if bins:
        centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
        ax.bar(centres, [b["accuracy"] for b in bins], width=0.09, color="#4c78a8", alpha=0.8, label="accuracy")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#e45756",
                label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    return _figure_png(fig)


def curves_png(history: list[dict[str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    keys = [k for k in history[0] if k != "epoch" and all(isinstance(h.get(k), (int, float)) for h in history)]
    for key in keys:
        if "loss" in key or "accuracy" in key:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if j in numeric else f"<td>{c}</td>"
                                    for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(inp: ReportInputs) -> str:
    test = inp.evaluation
    acc = test.get("accuracy")
    line = f"On {_e(inp.evaluated_on)}, the model is right on <b>{_pct(acc)}</b> of {test.get('n', '?')} items"
    line += _ci(test.get("ci95", {}).get("accuracy")) + "."
    cls = ""
    if inp.baseline and inp.gain:
        gain = inp.gain.get("accuracy", 0.0)
        interval = inp.gain.get("ci95", {}).get("accuracy")
        line += (f" Without the pre-trained network (baseline: {_e(inp.baseline.get('name', 'baseline'))}) it was "
                 f"{_pct(inp.baseline['test']['accuracy'])}: a gain of <b>{100 * gain:+.1f} points</b>"
                 + (f" (95% interval {100 * interval[0]:+.1f} to {100 * interval[1]:+.1f})" if interval else "") + ".")
        sure_loss = gain < 0 and (interval is None or interval[1] < 0)
        sure_gain = gain > 0 and (interval is None or interval[0] > 0)
        cls = "bad" if sure_loss else "good" if sure_gain else ""
        if sure_loss:
            line += " <b>The pre-trained network made things worse here (negative transfer).</b>"
    return f"<p class='verdict {cls}'>{line}</p>"


def _data_section(meta: dict[str, Any]) -> str:
    data = meta.get("data", {})
    out = ["<h2>The data</h2>",
           f"<p>{_e(data.get('n', '?'))} {_e(data.get('modality', ''))}s from <code>{_e(data.get('source', '?'))}</code>, "
           f"{len(meta.get('labels', []))} classes; split {_e(data.get('split_source', ''))} "
           f"(seed {_e(meta.get('seed', '?'))}): "
           + ", ".join(f"{_e(k)} {_e(v)}" for k, v in data.get("splits", {}).items()) + ".</p>"]
    counts = data.get("class_counts", {})
    if counts:
        out.append(_table(["class", "examples"], [[_e(k), str(v)] for k, v in counts.items()], {1}))
    findings = [f for f in data.get("findings", []) if isinstance(f, dict)]
    if findings:
        out.append("<p>What the data check found:</p><ul>")
        out += [f"<li class='finding-{_e(f.get('level', 'info'))}'><b>{_e(f.get('level', ''))}</b>: "
                f"{_e(f.get('message', ''))}" + (f" <span class='note'>Fix: {_e(f['fix'])}</span>" if f.get("fix") else "")
                + "</li>" for f in findings]
        out.append("</ul>")
    else:
        out.append("<p>The data check (files, labels, duplicates, balance) found nothing to fix.</p>")
    screen = data.get("label_screen")
    if isinstance(screen, dict) and screen.get("count"):
        worst = "".join(f"<li><code>{_e(i)}</code></li>" for i in screen.get("indices", [])[:20])
        out.append(f"<p class='{'finding-warning' if screen.get('warn') else ''}'>{_e(screen['count'])} of "
                   f"{_e(screen.get('n', '?'))} training items ({100 * float(screen.get('share', 0)):.1f}%) look "
                   "mislabelled to a cross-fitted probe (confident learning). The worst:</p><ul>" + worst + "</ul>"
                   "<p class='note'>Fix: <code>headstart check DATA --deep</code> lists every one with the label the "
                   "model suggests.</p>")
    return "\n".join(out)


def _selection_section(meta: dict[str, Any]) -> str:
    sel = meta.get("backbone_selection")
    if not sel:
        return ""
    primary = sel.get("primary", "")
    rows = [[str(i), _e(name), f"{sel['scores'][name].get(primary, float('nan')):.4g}"]
            for i, name in enumerate(sel.get("order", []), 1)]
    return ("<h2>How the pre-trained network was chosen</h2>"
            f"<p>The candidates were ranked by {_e(primary)} on the training split, before any training "
            f"(higher is better). {_e(sel.get('recommendation', ''))}</p>" + _table(["rank", "backbone", primary], rows, {2}))


def _strategy_section(meta: dict[str, Any]) -> str:
    strat = meta.get("strategy", {})
    bb = meta.get("backbone", {})
    card = bb.get("card", {})
    out = ["<h2>How the model was made</h2>",
           f"<p>Pre-trained network: <b>{_e(card.get('name', bb.get('name', '?')))}</b> "
           f"({_e(card.get('description', ''))}; licence {_e(card.get('license', '?'))}). Its weights were "
           f"{'fine-tuned' if bb.get('trained') else 'kept frozen'}. Strategy: <b>{_e(strat.get('type', '?'))}</b>.</p>"]
    chosen = strat.get("chosen", {})
    if chosen:
        out.append("<ul>" + "".join(f"<li>{_e(k.replace('_', ' '))}: {_e(f'{v:.3g}' if isinstance(v, float) else v)}</li>"
                                    for k, v in chosen.items()) + "</ul>")
    if strat.get("reasons"):
        out.append("<p>Why:</p><ul>" + "".join(f"<li>{_e(r)}</li>" for r in strat["reasons"]) + "</ul>")
    search = strat.get("details", {}).get("search")
    if isinstance(search, list) and search:
        out.append(_search_table(search))
    history = strat.get("details", {}).get("history")
    if isinstance(history, list) and history and isinstance(history[0], dict):
        out.append("<figure>" + _img(curves_png(history), "learning curves") +
                   "<figcaption>Learning curves, one point per epoch (validation accuracy chose the epoch kept).</figcaption></figure>")
    return "\n".join(out)


def _search_table(rows: list[dict[str, Any]]) -> str:
    """auto's search: every candidate run, its scores with their 95% intervals, time and outcome."""
    folds = any(r.get("cv_accuracy") is not None for r in rows)

    def score(acc: Any, ci: Any) -> str:
        return "-" if acc is None else f"{_pct(acc)}{_ci(ci)}"

    body = []
    for r in rows:
        cells = [_e(r.get("strategy", "?")), "-" if r.get("lr") is None else f"{r['lr']:g}",
                 "-" if r.get("epochs") is None else str(r["epochs"]), score(r.get("val_accuracy"), r.get("ci95"))]
        if folds:
            cells.append(score(r.get("cv_accuracy"), r.get("cv_ci95")))
        seconds = (r.get("seconds") or 0.0) + (r.get("cv_seconds") or 0.0)
        outcome = r.get("status", "") + (f": {r['note']}" if r.get("note") else "")
        cells += [f"{seconds:.1f}", _e(outcome)]
        body.append(cells)
    header = ["candidate", "learning rate", "epochs", "validation accuracy (95% interval)",
              *(["on folds of train + val"] if folds else []), "seconds", "outcome"]
    return ("<p>Every candidate auto tried, in order:</p>"
            + _table(header, body, numeric={1, 2, 3, 4, 5} if folds else {1, 2, 3, 4}))


def _metrics_section(inp: ReportInputs) -> str:
    test = inp.evaluation
    ci = test.get("ci95", {})
    rows = [["this model", _pct(test.get("accuracy")) + _ci(ci.get("accuracy")),
             _pct(test.get("macro_f1")) + _ci(ci.get("macro_f1")), f"{test.get('ece', float('nan')):.3f}"]]
    if inp.baseline:
        b = inp.baseline["test"]
        rows.append([f"baseline: {_e(inp.baseline.get('name', ''))}", _pct(b.get("accuracy")), _pct(b.get("macro_f1")),
                     f"{b.get('ece', float('nan')):.3f}"])
    out = [f"<h2>How well it works ({_e(inp.evaluated_on)})</h2>",
           _table(["", "accuracy", "macro-F1", "calibration error (ECE)"], rows, {1, 2, 3}),
           "<p class='note'>Accuracy: share of items with the right class. Macro-F1: the same idea averaged over "
           "classes, so small classes count as much as large ones. Calibration error: how far the model's "
           "confidence is from its accuracy (0 is perfect). Intervals are 95% bootstrap intervals over the items.</p>"]
    labels = list(test.get("per_class", {}))
    if test.get("confusion_matrix"):
        out.append("<figure>" + _img(confusion_png(test["confusion_matrix"], labels), "confusion matrix") +
                   "<figcaption>Confusion matrix: rows are the true classes, columns what the model said; the "
                   "diagonal is right.</figcaption></figure>")
    if inp.reliability:
        out.append("<figure>" + _img(reliability_png(inp.reliability), "reliability diagram") +
                   "<figcaption>Reliability: when the model says 80% sure, it should be right 80% of the time "
                   "(bars on the dashed line).</figcaption></figure>")
    if test.get("per_class"):
        rows = [[_e(n), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"])]
                for n, s in test["per_class"].items()]
        out += ["<h2>Per class</h2>", _table(["class", "precision", "recall", "F1", "items"], rows, {1, 2, 3, 4}),
                "<p class='note'>Precision: of the items called this class, the share that were. Recall: of the "
                "items of this class, the share found.</p>"]
    return "\n".join(out)


def _mistakes_section(inp: ReportInputs) -> str:
    from ..explain.measured import note as faithfulness_note  # "" for a method verified faithful

    out = ["<h2>The most confident mistakes, and why the model made them</h2>"]
    if inp.mistakes_note:
        out.append(f"<p class='note'>{_e(inp.mistakes_note)}</p>")
    if not inp.mistakes:
        return "\n".join(out)
    text = all(m.image_png is None for m in inp.mistakes)
    out.append(f"<div class='mistakes{' text' if text else ''}'>")
    for m in inp.mistakes:
        head = (f"<p><b>{_e(m.item)}</b><br>true: <b>{_e(m.true_label)}</b>, model said: <b>{_e(m.predicted)}</b> "
                f"({100 * m.confidence:.0f}% sure)</p>")
        body = ""
        if m.image_png is not None:
            body = "<div class='pair'>" + _img(m.image_png, f"{m.item} as the model saw it")
            body += (_img(m.overlay_png, f"evidence for {m.predicted}") if m.overlay_png else "") + "</div>"
        elif m.words_html:
            body = f"<p class='words'>{m.words_html}</p>"
        foot = (f"<p class='note'>Highlighted: the evidence for '{_e(m.predicted)}' ({_e(m.method)}). "
                f"{_e(faithfulness_note(m.method, 'text' if m.image_png is None else 'image'))}</p>"
                if m.method else "") + (f"<p class='note'>{_e(m.note)}</p>" if m.note else "")
        out.append(f"<div class='card-item'>{head}{body}{foot}</div>")
    out.append("</div>")
    return "\n".join(out)


def render_report(inp: ReportInputs, *, version: str = "") -> str:
    """The whole page as one string."""
    meta = inp.meta
    name = meta.get("backbone", {}).get("name", "model")
    labels = meta.get("labels", [])
    title = f"{name} → {len(labels)} classes"
    body = [f"<h1>{_e(title)}</h1>",
            f"<p class='sub'>Run of {_e(meta.get('created', '?'))}: <code>{_e(meta.get('command', ''))}</code></p>",
            _verdict(inp), _data_section(meta), _selection_section(meta), _strategy_section(meta),
            _metrics_section(inp), _mistakes_section(inp)]
    if inp.card:
        body.append("<h2>Transfer card</h2><details open><summary>What was reused, on what data, how, and what it "
                    f"bought</summary><pre class='card'>{_e(inp.card)}</pre></details>")
    page = Template(resources.files(__package__).joinpath("templates/report.html").read_text(encoding="utf-8"))
    css = resources.files(__package__).joinpath("static/report.css").read_text(encoding="utf-8")
    return page.substitute(title=_e(title), css=css, body="\n".join(b for b in body if b), version=_e(version),
                           created=_e(meta.get("created", "")))


def render_explanations(title: str, blocks: list[tuple[str, str]]) -> str:
    """A small page for ``headstart explain``: a heading and an HTML block per item (already escaped)."""
    page = Template(resources.files(__package__).joinpath("templates/report.html").read_text(encoding="utf-8"))
    css = resources.files(__package__).joinpath("static/report.css").read_text(encoding="utf-8")
    body = [f"<h1>{_e(title)}</h1>"] + [f"<div class='card-item'><p><b>{_e(h)}</b></p>{b}</div>" for h, b in blocks]
    return page.substitute(title=_e(title), css=css, body="\n".join(body), version="", created="")
