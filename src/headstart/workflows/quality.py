"""Data-centric checks on a data set through the feature cache: ``deep_check``, ``suggest``, ``slice_report``.

``deep_check`` extracts (or reads from the cache) the frozen features of the default backbone and
runs :mod:`headstart.quality` on them: likely mislabelled items from a K-fold probe's out-of-fold
probabilities, near-duplicates within the data and across train / test, and outliers. ``suggest``
ranks an unlabelled pool for labelling with a saved model. ``slice_report`` scores a saved model per
group of the test data.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_json_atomic, write_text_atomic
from ..backbones import create_backbone
from ..data import Dataset, load_data
from ..errors import ConfigError, DataError, HeadstartError
from ..features import extract_features_many
from ..model import TransferModel
from ..quality import (DEFAULT_FILTER, DEFAULT_THRESHOLDS, OUTLIER_Z, find_label_issues, near_duplicates,
                       out_of_fold_proba, outlier_scores, select, slice_metrics)
from ..quality.probe import probe_inputs
from ..quality.selection import entropy_scores, margin_scores
from .pipeline import backbone_name, check_backbone_modality, encode_labels

__all__ = ["CANDIDATE_COLUMNS", "deep_check", "read_groups", "slice_report", "suggest", "write_candidates"]

CANDIDATE_COLUMNS = ("kind", "item", "label", "suggested", "score", "other", "detail")


def deep_check(data: Dataset, *, test: Dataset | None = None, backbone: str | None = None, folds: int = 5,
               filter_by: str = DEFAULT_FILTER, duplicate_threshold: float | None = None, outlier_z: float = OUTLIER_Z,
               cache_dir: str | Path | None = None, device: str | None = None, batch_size: int = 64,
               progress: bool = True, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Label issues, near-duplicates (within ``data`` and against ``test``) and outliers of ``data``.

    Returns ``{"candidates": [row, ...], "counts": {...}, "probe": {...}, "seconds": {...}}``; each
    row has the :data:`CANDIDATE_COLUMNS` (``score``: low label quality, high similarity or high
    outlier z-score, as the kind says)."""
    if data.labels is None:
        raise DataError(f"{data.source} has no labels: label issues need them.",
                        fix="give a label column (tables) or one sub-folder per class (images).")
    t0 = time.perf_counter()
    name = backbone_name(backbone, data.modality)
    bb = create_backbone(name)
    check_backbone_modality(bb, name, data.modality)
    if test is not None and test.modality != data.modality:
        raise DataError(f"The test set {test.source} holds {test.modality}s but {data.source} holds {data.modality}s.",
                        fix="pass a test set of the same kind.")
    sets = [data] + ([test] if test is not None else [])
    feats = extract_features_many(bb, sets, cache_dir=cache_dir, device=device, batch_size=batch_size,
                                  progress=progress)
    t1 = time.perf_counter()
    names = data.label_names
    y = encode_labels(data.labels, names, data.source)
    z = probe_inputs(feats[0])  # once, for the probe and the outlier scores
    proba, info = out_of_fold_proba(z, y, len(names), folds=folds, prepared=True)
    issues = find_label_issues(y, proba, filter_by=filter_by)
    t2 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for i in issues.indices.tolist():
        rows.append({"kind": "label-issue", "item": data.ids[i], "label": names[y[i]],
                     "suggested": names[issues.suggested[i]], "score": round(float(issues.quality[i]), 6), "other": "",
                     "detail": f"the out-of-fold probe gives the label {issues.quality[i]:.3f}, "
                               f"'{names[issues.suggested[i]]}' {proba[i].max():.3f}"})
    threshold = DEFAULT_THRESHOLDS[data.modality] if duplicate_threshold is None else duplicate_threshold
    hashes = data.content_hashes()
    within = [p for p in near_duplicates(feats[0], threshold=threshold) if hashes[p.first] != hashes[p.second]]
    for p in within:
        same = data.labels[p.first] == data.labels[p.second]
        rows.append({"kind": "near-duplicate", "item": data.ids[p.second], "label": data.labels[p.second],
                     "suggested": "", "score": round(p.similarity, 6), "other": data.ids[p.first],
                     "detail": "same label" if same else f"labels differ: '{data.labels[p.first]}' vs "
                                                         f"'{data.labels[p.second]}'"})
    across: list[Any] = []
    if test is not None:
        thashes = test.content_hashes()
        across = [p for p in near_duplicates(feats[0], other=feats[1], threshold=threshold)
                  if hashes[p.first] != thashes[p.second]]
        for p in across:
            rows.append({"kind": "near-duplicate-test", "item": f"test: {test.ids[p.second]}",
                         "label": test.labels[p.second] if test.labels else "", "suggested": "",
                         "score": round(p.similarity, 6), "other": data.ids[p.first],
                         "detail": "a training item nearly identical to a test item: the test score is optimistic"})
    t3 = time.perf_counter()
    _, oz = outlier_scores(z, y)
    outliers = np.flatnonzero(oz > outlier_z)
    for i in outliers[np.argsort(-oz[outliers])].tolist():
        rows.append({"kind": "outlier", "item": data.ids[i], "label": names[y[i]], "suggested": "",
                     "score": round(float(oz[i]), 3), "other": "",
                     "detail": "far from every class in feature space (robust z-score of the distance to the "
                               "nearest class mean)"})
    t4 = time.perf_counter()
    counts = {"label-issue": len(issues.indices), "near-duplicate": len(within), "near-duplicate-test": len(across),
              "outlier": int(len(outliers))}
    log(f"Out-of-fold probe: {info['folds']} folds on {info['dims']} dimensions, C = {info['C']:g}; out-of-fold "
        f"accuracy {float((proba.argmax(1) == y).mean()):.3f}")
    return {"source": data.source, "backbone": name, "n_items": len(data), "candidates": rows, "counts": counts,
            "probe": {**info, "filter_by": filter_by, "oof_accuracy": float((proba.argmax(1) == y).mean())},
            "duplicate_threshold": threshold, "outlier_z": outlier_z,
            "seconds": {"features": round(t1 - t0, 3), "label_issues": round(t2 - t1, 3),
                        "duplicates": round(t3 - t2, 3), "outliers": round(t4 - t3, 3), "total": round(t4 - t0, 3)}}


def write_candidates(result: dict[str, Any], path: str | Path) -> Path:
    """The candidates as CSV (``.csv``) or the whole result as JSON (``.json``), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        write_json_atomic(path, result)
    elif path.suffix.lower() == ".csv":
        write_text_atomic(path, _csv(CANDIDATE_COLUMNS, result["candidates"]))
    else:
        raise ConfigError(f"'{path}' must end in .csv or .json.", fix="e.g. --deep-out candidates.csv")
    return path


def _csv(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _training_data(model: TransferModel, log: Callable[[str], None]) -> Dataset | None:
    """The model's training data from the source its artifact records, when it can still be read."""
    source = (model.info.get("data") or {}).get("source")
    if not source or source == "<memory>":
        return None
    try:
        return load_data(source, labelled=None)
    except HeadstartError as err:
        log(f"The training data recorded in the model ({source}) cannot be read ({err.message}); the pool is not "
            "checked against it: pass --labelled.")
        return None


def suggest(pool: Any, model: TransferModel, *, n: int = 50, strategy: str = "mix", labelled: Any = None,
            seed: int = 0, cache_dir: str | Path | None = None, device: str | None = None, batch_size: int = 64,
            progress: bool = True, text_column: str | None = None, encoding: str | None = None,
            log: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    """The ``n`` items of ``pool`` to label next, first first, with the model's guess and its doubt.

    ``labelled``: the data already labelled (default: the training data the model records). A pool
    item that repeats one of them is an error naming it: labelling it again would be wasted."""
    from ..quality import SELECTORS

    SELECTORS.get(strategy)  # an unknown name fails before any work
    data = load_data(pool, labelled=None, text_column=text_column, encoding=encoding)
    if data.modality != model.modality:
        raise DataError(f"The pool {data.source} holds {data.modality}s but the model takes {model.modality}s.",
                        fix=f"pass a pool of {model.modality}s (a {'folder of images' if model.modality == 'image' else 'table of texts'}).")
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive whole number, got {n!r}.")
    if n > len(data):
        raise ConfigError(f"--n {n} is larger than the pool {data.source} ({len(data)} items).",
                          fix=f"ask for at most {len(data)}, or add items to the pool.")
    known = load_data(labelled, labelled=None, text_column=text_column, encoding=encoding) if labelled is not None \
        else _training_data(model, log)
    lab_feats = None
    if known is not None:
        if known.modality != data.modality:
            raise DataError(f"The labelled data {known.source} holds {known.modality}s but the pool holds "
                            f"{data.modality}s.", fix="pass the model's training data with --labelled.")
        seen = set(known.content_hashes())
        repeats = [data.ids[i] for i, h in enumerate(data.content_hashes()) if h in seen]
        if repeats:
            shown = ", ".join(repeats[:5]) + (f" and {len(repeats) - 5} more" if len(repeats) > 5 else "")
            raise DataError(f"{len(repeats)} pool item(s) are already in the labelled data {known.source}: {shown}.",
                            fix="remove them from the pool: they are labelled already.")
    feats = model.features(data, cache_dir=cache_dir, use_cache=True, batch_size=batch_size, device=device,
                           progress=progress)
    if known is not None:
        lab_feats = model.features(known, cache_dir=cache_dir, use_cache=True, batch_size=batch_size, device=device,
                                   progress=progress)
    proba = model.proba_from_features(feats)
    order = select(strategy, proba, feats, lab_feats, n, seed=seed)
    margin, entropy = margin_scores(proba), entropy_scores(proba)
    names = model.label_names
    return [{"rank": r + 1, "item": data.ids[i], "predicted": names[int(proba[i].argmax())],
             "confidence": round(float(proba[i].max()), 6), "margin": round(float(margin[i]), 6),
             "entropy": round(float(entropy[i]), 6)} for r, i in enumerate(order.tolist())]


def write_suggestions(rows: list[dict[str, Any]], path: str | Path) -> Path:
    write_text_atomic(path, _csv(("rank", "item", "predicted", "confidence", "margin", "entropy"), rows))
    return Path(path)


def read_groups(data: Dataset, source: str, *, column: str, mapping: str | None = None,
                encoding: str | None = None) -> list[str]:
    """The group of every item of ``data``: from ``column`` of the table ``source``, or, for image
    folders, from a ``mapping`` CSV with columns ``path`` (as the folder's items are named, e.g.
    ``cat/003.jpg``) and ``column``."""
    from ..data.readers import _rows
    from ..quality import check_groups

    table = Path(mapping) if mapping else Path(source)
    if not table.is_file():
        raise DataError(f"--group-column needs a table, but {source} is a folder." if not mapping
                        else f"The group mapping file '{mapping}' does not exist.",
                        fix="for an image folder, pass --groups FILE.csv with columns path,GROUP (one row per image).")
    columns, rows = _rows(table, encoding)
    if column not in columns:
        raise DataError(f"{table.name} has no column '{column}' for the groups; its columns are: "
                        f"{', '.join(columns) or '(none)'}.", fix="pass --group-column with one of those names.")
    if not mapping:
        if len(rows) != len(data):
            raise DataError(f"{table.name} has {len(rows)} rows but {len(data)} items were read.")
        return check_groups([r.get(column) for _, r in rows], data.ids, column)
    if "path" not in columns:
        raise DataError(f"The group mapping {table.name} has no 'path' column; its columns are: {', '.join(columns)}.",
                        fix=f"write a header 'path,{column}' and one row per image, e.g. 'cat/003.jpg,indoor'.")
    by_path = {str(r.get("path") or "").strip().replace("\\", "/"): r.get(column) for _, r in rows}
    missing = [i for i in data.ids if i.replace("\\", "/") not in by_path]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} image(s) have no row in {table.name}: {shown}.",
                        fix="add a row 'path,group' for each, with the path as shown (relative to the folder).")
    return check_groups([by_path[i.replace("\\", "/")] for i in data.ids], data.ids, column)


def slice_report(model: TransferModel, data: Dataset, groups: Sequence[str], *, batch_size: int = 64,
                 device: str | None = None, progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """The scores of ``headstart.evaluate`` (accuracy, macro-F1, ECE, per class, intervals) with the
    slices under ``"slices"``: accuracy, macro-F1, ECE and n per group, the largest gap, parity
    differences for two classes. One pass of the model over the data serves both."""
    from ..data import validate
    from ..evaluation.intervals import bootstrap_metrics
    from ..evaluation.metrics import classification_metrics

    report = validate(data, require_labels=True, min_per_class=1)
    blocking = [f for f in report.errors if f.code not in ("single-class",)]
    if blocking:
        report.findings = blocking
        report.raise_for_errors()
    y = encode_labels(data.labels, model.label_names, data.source)
    proba = model.predict_proba(data, batch_size=batch_size, device=device, progress=progress)
    metrics = classification_metrics(y, proba, model.label_names)
    metrics["ci95"] = bootstrap_metrics(y, proba)
    metrics["slices"] = slice_metrics(y, proba, groups, model.label_names, seed=seed)
    return metrics
