"""One strategy on one split: ``train_model``, shared by ``fit``, ``rank --confirm``, the ladder and
:class:`~headstart.sklearn.TransferClassifier`; with the default backbone per modality and label encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..backbones import Backbone
from ..data import Dataset, Splits
from ..errors import BackboneError, ConfigError, DataError, HeadstartError
from ..evaluation.calibration import fit_temperature
from ..evaluation.ood import OODScorer
from ..features import extract_features_many, pick_device
from ..heads import PriorAdjusted, with_temperature
from ..methods import STRATEGIES, StrategyInputs
from ..methods.domain_adapt import check_domains
from ..model import TransferModel
from ..quality import screen_labels
from ..runtime import Runtime

DEFAULT_BACKBONES = {"image": "efficientnet-lite0", "text": "minilm-l6"}


def backbone_name(backbone: str | None, modality: str) -> str:
    """``backbone``, or the default backbone for data of ``modality``."""
    return backbone or DEFAULT_BACKBONES[modality]


def check_backbone_modality(bb: Backbone, name: str, modality: str) -> None:
    """A backbone for images cannot read texts, and the other way round."""
    if bb.card.modality != modality:
        raise BackboneError(f"The backbone '{name}' takes {bb.card.modality}s but the data holds {modality}s.",
                            fix=f"use a {modality} backbone, e.g. {DEFAULT_BACKBONES[modality]}.")


def encode_labels(labels: list[str] | None, label_names: list[str], where: str) -> np.ndarray:
    index = {n: i for i, n in enumerate(label_names)}
    if labels is None:
        raise DataError(f"{where} has no labels.", fix="give labelled data for training and evaluation.")
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{where} has label(s) the model does not know: {', '.join(unknown[:10])}.",
                        fix=f"the model's labels are: {', '.join(label_names)}.")
    return np.array([index[x] for x in labels], dtype=np.int64)


# The label screen's floor: on a few dozen items a 3-fold probe flags hard, correctly labelled items
# (a new user's 30 clean digits got 3 flags); bench/label_screen.py measures it from 1452 items up.
SCREEN_MIN_ITEMS = 60
SCREEN_MIN_PER_CLASS = 10


def without_labelled_items(pool: Dataset, parts: Splits, log: Any) -> Dataset:
    """The unlabelled pool less any item that is also labelled: a test item in the pool would leak
    into training through its pseudo-label, and a training item adds nothing."""
    labelled = {h: name for name in ("train", "val", "test") for h in getattr(parts, name).content_hashes()}
    hashes = pool.content_hashes()
    inside = [i for i, h in enumerate(hashes) if h in labelled]
    if not inside:
        return pool
    if len(inside) == len(pool):
        raise DataError(f"Every one of the {len(pool)} items of the unlabelled data {pool.source} is also a labelled "
                        "item (the same content): none is left to learn from.",
                        fix="point --unlabelled at items that are not in the labelled data.")
    where: dict[str, int] = {}
    for i in inside:
        where[labelled[hashes[i]]] = where.get(labelled[hashes[i]], 0) + 1
    log(f"[warning] {len(inside)} of the {len(pool)} unlabelled items are also in the labelled data ("
        + ", ".join(f"{n} in {k}" for k, n in where.items()) + f"; e.g. {pool.ids[inside[0]]}): they were left out "
        "of the pool, so no test item is learnt from. Fix: give only items without labels to --unlabelled.")
    keep = sorted(set(range(len(pool))) - set(inside))
    return pool.subset(keep)


def train_model(bb: Any, parts: Splits, label_names: list[str], strategy: str, config: Any, *,
                runtime: Runtime | None = None, seed: int = 0, checkpoint_dir: str | Path | None = None,
                resume: bool = False, target: Dataset | None = None, calibrate: bool = True, ood: bool = True,
                screen: bool = False, pool: Dataset | None = None) -> tuple[TransferModel, np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Run a strategy on the splits; shared by ``fit`` and :class:`~headstart.sklearn.TransferClassifier`.

    Frozen-backbone features (through the cache) are extracted only for strategies that use them.
    Returns the model, its test-split probabilities, the integer labels per split, and what the
    strategy chose. A trained backbone is evaluated on fresh features, never on cached ones.
    ``target``: the unlabelled target-domain data of a domain-adaptation strategy.
    ``pool``: unlabelled data from the same domain, for strategies that learn from it (pseudo-labels).
    ``calibrate``: fit a temperature on the validation split (kept only if it lowers the validation
    negative log-likelihood); the returned model and test probabilities include it.
    ``ood``: fit an out-of-scope scorer on the training features, thresholded on validation
    (:class:`~headstart.evaluation.ood.OODScorer`), so predictions can say "unsure".
    ``screen``: when the strategy used frozen features, look for likely mislabelled training items on
    them (a 3-fold probe and confident learning; ``chosen["label_screen"]``).
    ``runtime``: device, feature cache, batch size, progress and log (:class:`~headstart.runtime.Runtime`).
    """
    rt = runtime or Runtime()
    rt = rt.with_(device=pick_device(rt.device))
    log = rt.log
    entry = STRATEGIES.get(strategy)
    if entry.needs_target and target is None:
        raise ConfigError(f"The strategy '{strategy}' adapts to a target domain and needs its (unlabelled) data.",
                          fix="pass --target TARGET_DATA (fit(..., target=...)).")
    if target is not None and not entry.needs_target:
        raise ConfigError(f"Target data was given, but the strategy '{strategy}' does not use it.",
                          fix="add --adapt METHOD (auto, dann, cdan, coral, mmd, mcc), or drop --target.")
    if entry.pool == "needed" and pool is None:
        raise ConfigError(f"The strategy '{strategy}' learns from unlabelled data and needs some.",
                          fix="pass --unlabelled DATA (fit(..., unlabelled=...)): items like the training ones, "
                              "without labels.")
    if pool is not None and entry.pool == "no":
        users = [n for n in STRATEGIES.names() if STRATEGIES.get(n).pool != "no"]
        raise ConfigError(f"Unlabelled data was given, but the strategy '{strategy}' does not use it.",
                          fix=f"use --strategy {' or '.join(users)}, or drop --unlabelled.")
    if pool is not None:
        pool = without_labelled_items(pool, parts, log)
        if len(pool) == 0:
            raise DataError(f"The unlabelled data {pool.source} is empty.", fix="point --unlabelled at some items.")
        if pool.modality != parts.train.modality:
            raise DataError(f"The labelled data holds {parts.train.modality}s but the unlabelled data {pool.source} "
                            f"holds {pool.modality}s.", fix="give unlabelled items of the same kind.")
    target_labels = None
    if target is not None:
        check_domains(parts.train, target)
        if target.labels is not None:
            target_labels = encode_labels(target.labels, label_names, target.source)
    ys = {s: encode_labels(getattr(parts, s).labels, label_names, f"{parts.train.source} [{s}]")
          for s in ("train", "val", "test")}
    feats: dict[str, np.ndarray] = {}
    if entry.needs_features:
        names = ("train", "val", "test") + (("target",) if target is not None else ()) + (
            ("pool",) if pool is not None else ())
        sets = [getattr(parts, s) for s in ("train", "val", "test")] + [d for d in (target, pool) if d is not None]
        feats = dict(zip(names, extract_features_many(bb, sets, **rt.extraction())))
    inputs = StrategyInputs(parts, feats, ys, len(label_names), rt, seed, checkpoint_dir=checkpoint_dir,
                            resume=resume, label_names=list(label_names), target=target, target_labels=target_labels,
                            pool=pool)
    head, chosen, trained = entry.run(bb, inputs, config)
    smallest = int(np.bincount(ys["train"]).min()) if len(ys["train"]) else 0
    if screen and "train" in feats and (len(ys["train"]) < SCREEN_MIN_ITEMS or smallest < SCREEN_MIN_PER_CLASS):
        log(f"Label screen: skipped ({len(ys['train'])} training items, the smallest class {smallest}; it needs "
            f"{SCREEN_MIN_ITEMS} and {SCREEN_MIN_PER_CLASS}: on fewer, a cross-fitted probe is too weak to tell "
            "a wrong label from a hard item)")
    elif screen and "train" in feats:
        try:
            result = screen_labels(feats["train"], ys["train"], len(label_names), seed=seed)
        except HeadstartError as err:
            log(f"No label screen: {err}")
        else:
            if result is not None:
                chosen = {**chosen, "label_screen": result}
            else:
                log("Label screen: skipped (a class has fewer than 3 training items, too few to cross-fit); "
                    "`headstart check --deep` on the data looks at the labels with more folds")
    model = TransferModel(bb, head, label_names, backbone_trained=trained)

    final: dict[str, np.ndarray] = {}  # each split's features from the final backbone, computed once

    def features(split_name: str) -> np.ndarray:
        if split_name not in final:
            data = getattr(parts, split_name)
            if not trained and split_name in feats:
                final[split_name] = feats[split_name]
            elif len(data):
                final[split_name] = model.features(data, batch_size=rt.batch_size, device=rt.device,
                                                   progress=rt.progress)
            else:
                final[split_name] = np.empty((0, bb.card.feature_dim), dtype=np.float32)
        return final[split_name]

    def proba(split_name: str) -> np.ndarray:
        f = features(split_name)
        return model.proba_from_features(f) if len(f) else np.empty((0, len(label_names)))

    uses_labels = chosen.get("labelled_examples_used") != 0  # zero-shot promises to use no label at all
    # A head re-weighted to the target's class proportions was calibrated by the label-shift
    # estimator (a temperature and per-class biases on the source validation split) and its offsets
    # were computed for exactly that head: a temperature fitted now, on the source's proportions,
    # would both change what was corrected and pull the corrected head back towards the source.
    prior = model.head if isinstance(model.head, PriorAdjusted) else None
    if prior is not None:
        calibration = {"kept": False, "reason": "the prior-corrected head keeps the label-shift estimator's calibration "
                                                "(temperature and per-class biases on the source validation split)"}
        log(f"Calibration: {calibration['reason']}")
        chosen = {**chosen, "calibration": calibration}
    elif calibrate and uses_labels and len(parts.val):
        calibration = fit_temperature(proba("val"), ys["val"])
        if calibration["kept"]:
            model.head = with_temperature(model.head, calibration["temperature"])
            log(f"Calibration: temperature {calibration['temperature']:.3g} ({calibration.get('method', 'fitted')} on "
                f"{len(parts.val)} validation items; validation log-loss {calibration['val_nll_before']:.3f} -> "
                f"{calibration['val_nll_after']:.3f})")
        else:
            log(f"Calibration: {calibration.get('reason', 'not needed (temperature 1 fits the validation split best)')}")
        chosen = {**chosen, "calibration": calibration}
    if ood and uses_labels and len(parts.val) and len(parts.train):
        try:
            with threadpool_limits(1):  # small dense algebra: BLAS threads only contend on a few cores
                model.ood = OODScorer().fit(features("train"), ys["train"], features("val"))
            spec = model.ood.spec()
            chosen = {**chosen, "ood": {"method": spec["method"], "threshold": spec["threshold"],
                                        "quantile": spec["quantile"]}}
            log(f"Out-of-scope score: {spec['method']} distance to the nearest class; items beyond the validation "
                f"split's {100 * spec['quantile']:.0f}th percentile are flagged unsure")
        except HeadstartError as err:
            log(f"No out-of-scope score: {err}")
    if prior is not None:
        # The test split is the source's, with the source's class proportions: it is scored by the head
        # before the move to the target's (the deployed head adds it).
        model.head = prior.inner
        p_test = proba("test")
        model.head = prior
        chosen = {**chosen, "test_scored_without_prior_correction": True}
        return model, p_test, ys, chosen
    return model, proba("test"), ys, chosen
