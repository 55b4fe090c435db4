"""The run report: gather what a reader needs (the run's record, the evaluation, the most confident
mistakes with their explanations, the transfer card) and write ``report.html`` into the model folder.

``fit`` calls :func:`write_fit_report` with the test split it already scored; ``headstart report``
calls :func:`rebuild_report`, on the recorded test split or on other labelled data.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import FolderKind, atomic_dir, check_replaceable, write_json_atomic, write_text_atomic
from ..artifact import CARD, read_meta
from ..data import Dataset, load_data, split
from ..errors import DataError, HeadstartError
from ..evaluation.calibration import reliability_bins
from ..evaluation.intervals import bootstrap_metrics
from ..evaluation.metrics import classification_metrics
from ..explain import Settings, default_method, explain_items, usable_methods
from ..report.html import Mistake, ReportInputs, png_data_uri, render_explanations, render_report
from .pipeline import encode_labels

REPORT = "report.html"
MISTAKES = 4  # explained mistakes per report: enough to see a pattern, cheap enough for every fit
# The report's explanations: fewer steps and samples than `headstart explain`, so that writing it
# stays a small part of a fit (the ranking of the evidence barely moves; see docs/benchmarks.md).
REPORT_SETTINGS = Settings(steps=16, samples=64, grid=6, batch_size=16)
THUMB = 160  # px of the images shown
# Methods cheap enough to run inside every fit (one pass per item). Integrated Gradients on a text
# encoder cost as much as the linear-probe fit itself (bench/report_cost.py: +85% on BBC News), and
# occlusion, the verified image method, one pass per patch (about 200 per image), so a fit's report
# explains image mistakes with Grad-CAM (with its "not verified" note), lists a text model's
# mistakes unexplained, and `headstart report` adds the default method's explanations.
FIT_METHODS = ("grad-cam",)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("headstart")
    except metadata.PackageNotFoundError:
        return ""


def confident_mistakes(model: Any, data: Dataset, proba: np.ndarray, y: np.ndarray, *, k: int = MISTAKES,
                       method: str | None = None, explain: bool = True) -> list[Mistake]:
    """The ``k`` wrong items with the highest confidence, each explained for the class the model said
    (with ``explain``; otherwise shown as they are)."""
    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:k]
    if len(wrong) == 0:
        return []
    items = [data.load(int(i)) for i in wrong]
    if not explain:
        return [_unexplained(model, data.ids[int(i)], item, int(y[i]), int(pred[i]), float(proba[i, pred[i]]))
                for i, item in zip(wrong, items)]
    method = method or default_method(model.backbone)
    explanations = explain_items(model.backbone, model.head, model.label_names, items,
                                 [data.ids[int(i)] for i in wrong], method=method, target=None,
                                 settings=REPORT_SETTINGS)
    out = []
    for i, ex in zip(wrong, explanations):
        m = Mistake(item=data.ids[int(i)], true_label=model.label_names[int(y[i])],
                    predicted=model.label_names[int(pred[i])], confidence=float(proba[i, pred[i]]), method=method)
        if ex.modality == "image":
            m.image_png, m.overlay_png = ex.image_png(THUMB), ex.overlay_png(size=THUMB)
        else:
            m.words_html = ex.words_html()
        out.append(m)
    return out


def _unexplained(model: Any, item_id: str, item: Any, truth: int, pred: int, confidence: float) -> Mistake:
    import html
    import io

    m = Mistake(item=item_id, true_label=model.label_names[truth], predicted=model.label_names[pred],
                confidence=confidence)
    if isinstance(item, str):
        m.words_html = html.escape(item[:1500]) + ("…" if len(item) > 1500 else "")
    else:
        thumb = item.convert("RGB").resize((THUMB, THUMB))
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        m.image_png = buf.getvalue()
    return m


def build_report(model: Any, meta: dict[str, Any], data: Dataset | None, proba: np.ndarray | None,
                 y: np.ndarray | None, *, evaluated_on: str, card: str = "", evaluation: dict[str, Any] | None = None,
                 mistakes_note: str = "", explain: bool = True, method: str | None = None) -> str:
    """The page for ``model`` (its record ``meta``), scored on ``data`` (``proba`` and labels ``y``);
    the mistakes explained by ``method`` (None: the backbone's default)."""
    metrics = meta.get("metrics", {})
    if evaluation is None:
        evaluation = metrics.get("test", {})
    reliability: list[dict[str, float]] = []
    mistakes: list[Mistake] = []
    if proba is not None and y is not None and len(y):
        reliability = reliability_bins(proba, y)
        if data is not None:
            try:
                mistakes = confident_mistakes(model, data, proba, y, explain=explain, method=method)
                if not mistakes:
                    mistakes_note = "The model made no mistake on these items."
                elif not explain:
                    mistakes_note = ("These mistakes are shown without their explanations, which would cost about as "
                                     "much time as the fit for this model; `headstart report RUN` adds them.")
            except HeadstartError as err:  # an item that no longer decodes must not cost the whole report
                mistakes_note = f"The mistakes could not be explained: {err}"
    same_items = evaluation is metrics.get("test")
    inputs = ReportInputs(meta=meta, evaluation=evaluation, evaluated_on=evaluated_on, reliability=reliability,
                          mistakes=mistakes, mistakes_note=mistakes_note, card=card,
                          baseline=metrics.get("baseline") if same_items else None,
                          gain=metrics.get("transfer_gain") if same_items else None)
    return render_report(inputs, version=_version())


def write_fit_report(model: Any, folder: str | Path, test: Dataset, test_proba: np.ndarray,
                     y_test: np.ndarray) -> Path:
    """``report.html`` for a model ``fit`` just saved in ``folder``, on the test split it scored."""
    folder = Path(folder)
    meta = read_meta(folder)
    card = (folder / CARD).read_text(encoding="utf-8") if (folder / CARD).is_file() else ""
    fit_method = next((m for m in usable_methods(model.backbone) if m in FIT_METHODS), None)
    page = build_report(model, meta, test, test_proba, y_test,
                        evaluated_on=f"the held-out test split of {meta.get('data', {}).get('source', 'the data')}",
                        card=card, explain=fit_method is not None, method=fit_method)
    write_text_atomic(folder / REPORT, page)
    return folder / REPORT


def _recorded_split(meta: dict[str, Any]) -> tuple[Dataset, str] | None:
    """The test split the model was scored on, re-made from the recorded data, seed and fractions;
    None when the data cannot be read here any more."""
    data = meta.get("data", {})
    source = data.get("source")
    how = str(data.get("split_source", ""))
    if not isinstance(source, str):
        return None
    try:
        dataset = load_data(source)
    except (HeadstartError, OSError):
        return None
    if dataset.splits:
        parts = split(dataset, seed=int(meta.get("seed", 0)))
    else:
        found = re.search(r"val ([0-9.]+), test ([0-9.]+)", how)
        if not found:
            return None
        parts = split(dataset, val=float(found.group(1)), test=float(found.group(2)), seed=int(meta.get("seed", 0)))
    expected = data.get("splits", {}).get("test")
    if expected is not None and len(parts.test) != expected:  # the data changed since the fit
        return None
    return parts.test, f"the held-out test split of {source}"


def rebuild_report(run: str | Path, data: Any = None, *, out: str | Path | None = None, batch_size: int = 64,
                   device: str | None = None, text_column: str | None = None, label_column: str | None = None,
                   encoding: str | None = None, log: Any = None) -> Path:
    """Write the report of the model folder ``run`` again: on labelled ``data`` when given, else on
    the recorded test split (re-made from the recorded data when it can still be read). Written to
    ``out`` (default ``run/report.html``) in one step: a failure leaves the old file as it was."""
    from ..model import load_model

    say = log or (lambda m: None)
    run = Path(run)
    meta = read_meta(run)  # a folder that is not a model fails here, before anything is written
    target = Path(out) if out is not None else run / REPORT
    if target.exists() and target.is_dir():
        raise DataError(f"--out '{target}' is a folder.", fix="name the HTML file to write, e.g. --out report.html.")
    model = load_model(run)
    card = (run / CARD).read_text(encoding="utf-8") if (run / CARD).is_file() else ""
    t0 = time.perf_counter()
    evaluation = None
    note = ""
    if data is not None:
        dataset = data if isinstance(data, Dataset) else load_data(data, text_column=text_column,
                                                                    label_column=label_column, encoding=encoding)
        if dataset.modality != model.modality:
            raise DataError(f"{dataset.source} holds {dataset.modality}s but the model takes {model.modality}s.",
                            fix=f"give {model.modality} data to report on.")
        y = encode_labels(dataset.labels, model.label_names, dataset.source)
        where = f"{dataset.source} (all {len(dataset)} items)"
    else:
        found = _recorded_split(meta)
        if found is None:
            dataset, y, where = None, None, f"the held-out test split of {meta.get('data', {}).get('source', '?')}"
            note = ("The training data cannot be read here any more, so the mistakes are not shown; run "
                    "`headstart report RUN DATA` with labelled data to see them.")
        else:
            dataset, where = found
            y = encode_labels(dataset.labels, model.label_names, dataset.source)
    proba = None
    if dataset is not None and len(dataset):
        say(f"Scoring {len(dataset)} items from {dataset.source}")
        proba = model.predict_proba(dataset, batch_size=batch_size, device=device, progress=False)
        if data is not None:
            evaluation = classification_metrics(y, proba, model.label_names)
            evaluation["ci95"] = bootstrap_metrics(y, proba)
    page = build_report(model, meta, dataset, proba, y, evaluated_on=where, card=card, evaluation=evaluation,
                        mistakes_note=note)
    write_text_atomic(target, page)
    say(f"Wrote {target} ({len(page.encode()) / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f} s")
    return target


# -- headstart explain -----------------------------------------------------------------------
EXPLANATIONS = FolderKind("a headstart explanations folder", "explanations.json", "method",
                          frozenset({"explanations.json", "index.html", "images"}))


def explain_to_folder(run: str | Path, items: list[str], out: str | Path, *, method: str | None = None,
                      target: str | None = None, settings: Settings | None = None, overwrite: bool = False) -> Path:
    """Explain ``items`` (image paths, or texts: an existing ``.txt`` file is read as one text) with
    the model in ``run``, and write ``out``: ``explanations.json``, ``index.html`` and, for images,
    ``images/NNN.png`` (the evidence laid over the item). Everything is computed first and the folder
    appears in one step, so a failure writes nothing."""
    from ..model import load_model

    read_meta(run)  # a folder that is not a model fails before the model is loaded
    check_replaceable(out, EXPLANATIONS, overwrite=overwrite)
    model = load_model(run)
    if not items:
        raise DataError("No items to explain.", fix="name at least one image file (image model) or text (text model).")
    if model.modality == "text":
        items = [Path(i).read_text(encoding="utf-8") if i.endswith(".txt") and Path(i).is_file() else i for i in items]
    explanations = model.explain(items, method=method, target=target, settings=settings)
    method = explanations[0].method
    blocks, records = [], []
    with atomic_dir(out, EXPLANATIONS, overwrite=overwrite) as tmp:
        for n, ex in enumerate(explanations):
            record = ex.to_dict()
            title = f"{ex.item}: {ex.label} ({100 * ex.probability:.0f}%)"
            if ex.modality == "image":
                (tmp / "images").mkdir(exist_ok=True)
                name = f"images/{n:03d}.png"
                overlay = ex.overlay_png()
                (tmp / name).write_bytes(overlay)
                record["overlay"] = name
                blocks.append((title, "<div class='pair'>" + f"<img src='{png_data_uri(ex.image_png())}' alt='input'>"
                               + f"<img src='{png_data_uri(overlay)}' alt='evidence'></div>"))
            else:
                blocks.append((title, f"<p class='words'>{ex.words_html()}</p>"))
            records.append(record)
        write_json_atomic(tmp / "explanations.json", {"method": method, "model": str(run), "items": records})
        (tmp / "index.html").write_text(render_explanations(f"Why the model decided ({method})", blocks),
                                        encoding="utf-8")
    return Path(out)
