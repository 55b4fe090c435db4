"""The high-level one-liners, built only from the public lower-level parts.

``fit`` = load -> validate -> split -> backbone -> cached features -> strategy -> evaluate against
the baseline -> (save artifact + transfer card). ``fit`` always starts from the pre-trained weights.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ._io import check_replaceable, is_owned, remove_stale_temporaries
from .backbones import create_backbone
from .data import Dataset, load_data, split, validate
from .errors import ConfigError, DataError, OutputError
from .evaluation.baselines import baseline_proba
from .evaluation.calibration import apply_temperature, reliability_bins
from .evaluation.intervals import bootstrap_metrics, interval_words
from .evaluation.metrics import classification_metrics
from .features import pick_device
from .methods import make_config
from .artifact import MODEL_FOLDER
from .model import TransferModel
from .train.loop import CHECKPOINT_FOLDER, CHECKPOINT_MARKER
from .workflows.pipeline import (backbone_name, check_backbone_modality, encode_labels, train_model,
                                 without_labelled_items)
from .workflows.report import write_fit_report
from .runtime import Runtime

def fit(data: Any, labels: Any = None, *, backbone: str | None = None, strategy: str = "linear-probe",
        out: str | Path | None = None, val: float = 0.15, test: float = 0.2, seed: int = 0,
        image_size: int | None = None, max_length: int | None = None, cache_dir: str | Path | None = None,
        use_cache: bool = True, device: str | None = None, batch_size: int = 64, baseline: bool = True,
        progress: bool = True, options: dict[str, Any] | None = None, text_column: str | None = None,
        label_column: str | None = None, split_column: str | None = None,
        log: Callable[[str], None] | None = None, command: str | None = None, resume: bool = False,
        checkpoint_dir: str | Path | None = None, target: Any = None, overwrite: bool = False,
        encoding: str | None = None, unlabelled: Any = None) -> TransferModel:
    """Train a transfer model on ``data`` and return it; with ``out``, also save the artifact.

    ``data``: an image folder, a CSV / TSV / JSONL / Parquet table, ``builtin:<name>``, a
    :class:`Dataset`, or texts / image arrays with ``labels``. ``options`` go to the strategy's
    config (e.g. ``{"head": "mlp"}`` for the linear probe); unknown options are an error.
    ``command`` is recorded in the transfer card as the way to reproduce the run. Fine-tuning
    checkpoints each epoch to ``checkpoint_dir`` (default: ``<out>.ckpt`` beside ``out``); with
    ``resume=True`` an interrupted run continues from there, if it is the same run (same data, options
    and seed). The checkpoint is removed once the artifact is saved.

    ``out`` must be new, an empty folder, or (with ``overwrite=True``) a model folder; a folder with
    anything else in it, or one inside ``data``, is refused before any work starts.

    Domain adaptation: ``target`` is data from where the model will be used (a folder or table,
    labels optional: never trained on, they score the model and guard the choice) and ``strategy="domain-adapt"`` with
    ``options={"method": "auto" | "dann" | ...}``.

    Unlabelled data from the same domain (``unlabelled``: a folder, a table or a :class:`Dataset`;
    labels in it are ignored) feeds ``strategy="pseudo-label"`` and is one more of ``auto``'s
    candidates.

    Each step (and every run of ``auto``'s search) is a message to ``log``; without it, an INFO record
    of the ``"headstart"`` logger.
    """
    # without ``log``, the steps go to the standard "headstart" logger (shown with
    # logging.basicConfig(level=logging.INFO)), as a library's should, not to stdout
    say = log or logging.getLogger("headstart").info
    config = make_config(strategy, **(options or {}))
    if out is not None:
        if not str(out).strip():
            raise ConfigError("--out is empty.", fix="name a folder for the model, e.g. --out runs/NAME.")
        out = Path(out).absolute().resolve(strict=False) if Path(out).name in ("", ".", "..") else Path(out)
        check_output(out, data, overwrite=overwrite)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else (Path(out).with_name(Path(out).name + ".ckpt") if out else None)
    if ckpt is not None:
        check_replaceable(ckpt, CHECKPOINT_FOLDER, overwrite=True)
    # A checkpoint is removed after the save only if this run wrote it: one left by an interrupted
    # run of another strategy stays for its own --resume.
    ckpt_before = _mtime(ckpt / CHECKPOINT_MARKER) if ckpt is not None else None
    for place in (p for p in (out, ckpt) if p is not None):
        remove_stale_temporaries(Path(place).absolute())  # what killed earlier runs left beside them
    t0 = time.perf_counter()
    dataset = load_data(data, labels=labels, text_column=text_column, label_column=label_column,
                        split_column=split_column, encoding=encoding)
    report = validate(dataset)
    for finding in report.findings:
        if finding.level != "info":
            say(f"[{finding.level}] {finding.line(limit=3)}")
    report.raise_for_errors()
    if not dataset.splits and (test <= 0 or val <= 0):
        raise ConfigError(f"`val` and `test` must be > 0, got val={val}, test={test}: the validation split chooses "
                          "hyper-parameters and the test split gives the reported scores.",
                          fix="use e.g. --val 0.15 --test 0.2, or give the data its own splits (--split-column).")
    parts = split(dataset, val=val, test=test, seed=seed)
    if not len(parts.test):
        distinct = len(set(dataset.content_hashes()))
        raise DataError(f"{dataset.source}: no item is left for the test split (train {len(parts.train)}, val "
                        f"{len(parts.val)}, test 0): copies of an item always share a split, and the data has only "
                        f"{distinct} distinct item(s) among {len(dataset)}.",
                        fix="add more distinct items, or give the data its own splits (--split-column).")
    label_names = dataset.label_names
    target_data = None
    if target is not None:
        try:
            target_data = target if isinstance(target, Dataset) else load_data(target, labelled=None,
                                                                               text_column=text_column,
                                                                               encoding=encoding)
        except DataError as err:
            raise DataError(f"The target data cannot be used: {err.message}", fix=err.fix) from None
        say(f"Target: {len(target_data)} {target_data.modality}s from {target_data.source}"
            + (" (labels never trained on: they score the model and guard the choice)" if target_data.labels is not None else " (unlabelled)"))
    pool_data = None
    if unlabelled is not None:
        try:
            pool_data = unlabelled if isinstance(unlabelled, Dataset) else load_data(
                unlabelled, labelled=None, text_column=text_column, encoding=encoding)
        except DataError as err:
            raise DataError(f"The unlabelled data cannot be used: {err.message}", fix=err.fix) from None
        say(f"Unlabelled: {len(pool_data)} {pool_data.modality}s from {pool_data.source}")
        pool_data = without_labelled_items(pool_data, parts, say)
    say(f"Data: {len(dataset)} {dataset.modality}s, {len(label_names)} classes; "
        + ", ".join(f"{k} {v}" for k, v in parts.sizes().items()))

    selection = None
    name = backbone_name(backbone, dataset.modality)
    if name == "auto":
        # Rank on the training split only: the test split must not influence any choice.
        from .workflows.rank import rank_backbones

        selection = rank_backbones(parts.train, scores=("logme",), cache_dir=cache_dir, device=device,
                                   progress=progress, log=say)
        name = selection["order"][0]
        say(f"Backbone selection: {selection['recommendation']}")
    bb = create_backbone(name, image_size=image_size, max_length=max_length)
    check_backbone_modality(bb, name, dataset.modality)
    dev = pick_device(device)
    say(f"Backbone: {bb.card.name} ({bb.card.num_params / 1e6:.1f} M parameters) on {dev}")
    t1 = time.perf_counter()
    runtime = Runtime(device=dev, cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size,
                      progress=progress, log=say)
    model, test_proba, ys, chosen = train_model(bb, parts, label_names, strategy, config, runtime=runtime, seed=seed,
                                                checkpoint_dir=ckpt, resume=resume, target=target_data,
                                                screen=True, pool=pool_data)
    t3 = time.perf_counter()
    screen = chosen.get("label_screen")
    if screen and screen["warn"]:
        say(f"[warning] {screen['count']} of {screen['n']} training items ({100 * screen['share']:.1f}%) look "
            f"mislabelled to a quick cross-fitted probe. Fix: `headstart check {dataset.source} --deep` (the full "
            "check, which may list a somewhat different set) shows each with the label the model suggests; correct "
            "or remove them and fit again.")
    test_metrics = classification_metrics(ys["test"], test_proba, label_names)
    calibration = chosen.get("calibration")
    if calibration is not None and "temperature" in calibration and len(ys["test"]):
        raw = apply_temperature(test_proba, 1.0 / calibration["temperature"])  # undo the scaling
        calibration.update({"test_ece_before": classification_metrics(ys["test"], raw, label_names)["ece"],
                            "test_ece_after": test_metrics["ece"],
                            "reliability_before": reliability_bins(raw, ys["test"]),
                            "reliability_after": reliability_bins(test_proba, ys["test"])})
    test_metrics["ci95"] = bootstrap_metrics(ys["test"], test_proba, seed=seed)
    if test_metrics["ci95"]:
        small = interval_words(test_metrics["n"], test_metrics["ci95"]["accuracy"])
        if small:
            say(f"[warning] {small}")
    metrics: dict[str, Any] = {"test": test_metrics}
    if target_data is not None and target_data.labels is not None:
        tproba = model.predict_proba(target_data, batch_size=batch_size, device=device, progress=progress)
        metrics["target"] = classification_metrics(encode_labels(target_data.labels, label_names, target_data.source),
                                                   tproba, label_names)
    if baseline:
        say("Baseline: training the no-transfer reference on the same split")
        bproba, binfo = baseline_proba(parts.train, parts.val, parts.test, ys["train"], ys["val"],
                                       len(label_names), seed=seed)
        btest = classification_metrics(ys["test"], bproba, label_names)
        metrics["baseline"] = {**binfo, "test": btest}
        metrics["transfer_gain"] = {k: test_metrics[k] - btest[k] for k in ("accuracy", "macro_f1")}
        if len(ys["test"]):
            paired = bootstrap_metrics(ys["test"], test_proba, reference=bproba, seed=seed)["gain"]
            metrics["transfer_gain"]["ci95"] = {k: paired[k] for k in ("accuracy", "macro_f1")}
            metrics["transfer_gain"]["p_not_better"] = paired["p_not_better"]
    t4 = time.perf_counter()
    model.info = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or f"headstart.fit({dataset.source!r}, backbone={name!r}, strategy={strategy!r}, "
                              f"seed={seed})",
        "seed": seed,
        "strategy": {"type": strategy, "config": config.to_dict(),
                     "chosen": {k: v for k, v in chosen.items()
                                if k in ("chosen_strategy", "chosen_lr", "C", "best_epoch", "trainable_params",
                                         "adapter_params")},
                     "reasons": chosen.get("reasons", []),
                     "details": {k: v for k, v in chosen.items() if k not in ("calibration", "label_screen")}},
        "data": {"source": dataset.source, "modality": dataset.modality, "n": len(dataset),
                 "class_counts": report.class_counts, "splits": parts.sizes(),
                 "split_source": "the data's own splits" if dataset.splits else f"stratified, val {val}, test {test}",
                 "findings": report.to_dict()["findings"],
                 **({"label_screen": {**screen, "indices": [parts.train.ids[i] for i in screen["indices"]]}}
                    if screen else {}),
                 **({"target": {"source": target_data.source, "n": len(target_data),
                                "labelled": target_data.labels is not None}} if target_data is not None else {}),
                 **({"unlabelled": {"source": pool_data.source, "n": len(pool_data)}} if pool_data is not None
                    else {})},
        "metrics": metrics,
        **({"calibration": calibration} if calibration is not None else {}),
        **({"backbone_selection": {"primary": selection["primary"], "order": selection["order"],
                                   "scores": {r["backbone"]: r["scores"] for r in selection["rows"]},
                                   "recommendation": selection["recommendation"]}} if selection else {}),
        "timings_s": {"load_and_check": round(t1 - t0, 3), "adapt": round(t3 - t1, 3),
                      "evaluate_and_baseline": round(t4 - t3, 3)},
    }
    # Under torchrun every process ends with the same model; the first one saves it.
    if out is not None and os.environ.get("RANK", "0") == "0":
        # report.html is written inside the new folder before it replaces the old one: Ctrl+C during the
        # report leaves the earlier model as it was
        model.save(out, overwrite=overwrite,
                   extra=lambda folder: write_fit_report(model, folder, parts.test, test_proba, ys["test"]))
        say(f"Saved the model to {out}")
        if (ckpt is not None and not checkpoint_dir and is_owned(ckpt, CHECKPOINT_FOLDER)
                and _mtime(ckpt / CHECKPOINT_MARKER) != ckpt_before):
            shutil.rmtree(ckpt, ignore_errors=True)
    if resume and "resumed_from_epoch" not in chosen:
        say(f"--resume: the strategy '{strategy}' keeps no checkpoint (nothing to resume); it trained from the start")
    return model


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def check_output(out: str | Path, data: Any, *, overwrite: bool) -> None:
    """Refuse an ``out`` that would destroy something: a folder that is not a model, an existing model
    without ``overwrite``, or a place inside (or equal to) the training data."""

    if isinstance(data, (str, Path)) and not str(data).startswith("builtin:"):
        src, dst = Path(data).resolve(), Path(out).resolve()
        if dst == src or (src.is_dir() and dst.is_relative_to(src)) or (dst.is_dir() and src.is_relative_to(dst)):
            raise OutputError(f"--out '{out}' would overlap the data '{data}'; saving there would mix the model "
                              "with the data or replace it.", fix="choose an --out folder outside the data, e.g. runs/NAME.")
    check_replaceable(out, MODEL_FOLDER, overwrite=overwrite)


def load(path: str | Path) -> TransferModel:
    """Load a saved model folder; its predictions equal those of the model that was saved."""
    from .model import load_model

    return load_model(path)


def evaluate(model: TransferModel | str | Path, data: Any, *, labels: Any = None, batch_size: int = 64,
             device: str | None = None, progress: bool = True, text_column: str | None = None,
             label_column: str | None = None) -> dict[str, Any]:
    """Score a model on labelled data (all of it: no splitting)."""
    if not isinstance(model, TransferModel):
        model = load(model)
    dataset = data if isinstance(data, Dataset) else load_data(data, labels=labels, text_column=text_column,
                                                                  label_column=label_column)
    report = validate(dataset, require_labels=True, min_per_class=1)
    blocking = [f for f in report.errors if f.code not in ("single-class",)]
    if blocking:
        report.findings = blocking
        report.raise_for_errors()
    y = encode_labels(dataset.labels, model.label_names, dataset.source)
    proba = model.predict_proba(dataset, batch_size=batch_size, device=device, progress=progress)
    metrics = classification_metrics(y, proba, model.label_names)
    metrics["ci95"] = bootstrap_metrics(y, proba)
    return metrics
