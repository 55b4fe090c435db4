"""``domain-adapt``: unsupervised domain adaptation on the shared training loop, with a negative-transfer guard.

``adapt_domain`` trains ``source-only`` (always: it is the reference) and each requested alignment
method, over one or more seeds; reads the label-free validators on the target domain; picks a
method (under ``auto`` by the validators alone); and keeps source-only when the adapted model does
not look better, saying so. Then, unless ``label_shift="off"``, it estimates the target's class
proportions (:mod:`headstart.domain.label_shift`) and re-weights the kept model's probabilities
to them when they moved and the estimate passes the trust check; with ``label_shift="on"`` the aligners also
train on the source resampled to source-only's estimate. Target labels, when the user has some, are used only to report
accuracy and, if given, to judge the guard; never to train.

Two modes share all of this:
- ``features`` (default): the backbone stays frozen; a bottleneck head is trained on cached
  features with the alignment loss on the bottleneck. Seconds per run on a CPU. Here also
  ``self-train`` (:mod:`headstart.domain.self_training`): each domain standardised with its own
  statistics, rows L2-normalised, and curriculum self-training of a logistic probe whose C is
  chosen on the source validation split; ``normalise="per-domain"`` gives the aligners the
  per-domain standardisation too. Either way the kept head carries the target's statistics (as
  its ``mean`` / ``std`` buffers), so it is meant for data from the target domain.
- ``finetune``: the backbone trains too (the full DANN / CDAN recipe); needs a GPU to be quick.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..train.linear_probe import standardiser
from ..backbones.cached import CachedFeatures, feature_dataset
from ..data.dataset import Dataset
from ..data.splits import Splits
from ..domain.gap import mmd_test, proxy_a_distance
from ..domain.label_shift import (SHIFT_ESTIMATORS, PriorEstimate, class_weights, estimate_prior,
                                  SHIFT_TOLERANCE, label_shift_significant, resample_indices, source_proportions)
from ..domain.losses import ALIGNERS, TRADE_OFF, build_aligner
from ..domain.self_training import (LABEL_SHIFT_SHARE, NORMALISE, as_bottleneck_head, choose_strength,
                                    curriculum_self_train, domain_statistics, mixture_explained_share, normalise)
from ..domain.validators import (CHOOSING, PROPORTION_EXCESS, VALIDATORS, proportion_excess, proportions_trusted,
                                  validator_readings)
from ..errors import ConfigError, DataError
from ..options import Constraint, Interval, OneOf
from ..heads import BottleneckHead, PriorAdjusted, with_temperature
from ..train.config import FineTuneConfig
from ..train.loop import Classifier, train
from .base import StrategyInputs, register_strategy

SOURCE_ONLY = "source-only"
SELF_TRAIN = "self-train"  # per-domain normalisation + curriculum self-training of a logistic probe (features mode)
PRIOR = "+prior"  # suffix of a candidate whose target probabilities are re-weighted to the estimated proportions
LABEL_SHIFT_MODES = ("off", "auto", "on")
SELF_TRAIN_STARTS = ("probe", "aligners", "ensemble")
# The guard keeps an adaptation only when every validator reads it better than source-only by more
# than this: a method that changed nothing (or collapsed to source-only's outputs) ties, and a tie
# is no reason to ship a different model.
VALIDATOR_TIE = 1e-3
# label_shift=on still stands aside when an untrusted estimate puts this share of the target in one
# class: re-weighting to it turns every prediction into that class.
DEGENERATE_SHARE = 0.95
# label_shift=auto corrects only when EM's calibration rests on at least this many source
# validation items of every class (see _decide_prior).
MIN_CALIBRATION_PER_CLASS = 20
# Self-training and per-domain normalisation standardise the target with its own mean and spread:
# on a handful of items those are noise, and the model deployed would be fitted to them.
MIN_TARGET_FOR_STATISTICS = 20


@dataclass(frozen=True)
class AdaptConfig(FineTuneConfig):
    method: str = "auto"  # source-only | dann | cdan | coral | mmd | mcc | self-train | auto
    mode: str = "features"  # features (frozen backbone) | finetune
    bottleneck: int = 256
    bottleneck_dropout: float = 0.5
    trade_off: float = 0.0  # weight of the alignment loss; 0 = the method's default
    validator: str = "rv"  # the label-free score that picks the epoch
    guard: bool = True  # keep source-only when adaptation does not look better
    seeds: int = 1  # runs per method (mean +- std in the card; adversarial methods are unstable)
    epochs: int = 10
    lr: float = 1e-4  # backbone rate (finetune mode)
    head_lr: float = 1e-3
    batch_size: int = 32
    label_smoothing: float = 0.1
    head_dropout: float = 0.0
    augment: str = "none"
    patience: int = 100  # every epoch is scored by the validator; no early stop by default
    label_shift: str = "auto"  # off | auto (correct when the trusted estimate moved) | on
    shift_estimator: str = "em"  # how the target's class proportions are estimated (SHIFT_ESTIMATORS)
    normalise: str = "source"  # source | per-domain: the statistics the aligners' inputs are standardised with
    self_train_start: str = "probe"  # probe | aligners | ensemble: where self-training's first pseudo-labels come from
    type: str = field(default="domain-adapt", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "method": OneOf(lambda: (SOURCE_ONLY, "auto", *ALIGNERS.names(), SELF_TRAIN)),
        "normalise": OneOf(NORMALISE), "self_train_start": OneOf(SELF_TRAIN_STARTS),
        "mode": OneOf(("features", "finetune")), "bottleneck": Interval(1),
        "bottleneck_dropout": Interval(0, 1, high_open=True), "trade_off": Interval(0),
        "validator": OneOf(lambda: VALIDATORS.names()), "seeds": Interval(1),
        "label_shift": OneOf(LABEL_SHIFT_MODES), "shift_estimator": OneOf(lambda: SHIFT_ESTIMATORS.names()),
    }
    notes: ClassVar[dict[str, str]] = {
        "method": "the alignment; auto tries each and keeps the validators' choice",
        "mode": "features: frozen backbone, align its features; finetune: the backbone in the loop",
        "trade_off": "weight of the alignment loss; 0 = the method's default",
        "validator": "the label-free score that picks the epoch and the method",
        "guard": "keep source-only when adaptation does not look better",
        "seeds": "runs per method (mean +- std in the card; adversarial methods are unstable)",
        "patience": "every epoch is scored by the validator; no early stop by default",
        "label_shift": "off; auto: re-weight to the estimated target class proportions when they moved beyond their "
                       "intervals and the estimate is trusted (small confidence drop, agrees with the feature-mean "
                       "class mixture); on: whenever they can be estimated",
        "shift_estimator": "how the target's class proportions are estimated without its labels",
        "self_train_start": "probe: self-training's first pseudo-labels come from a probe on the source; aligners: "
                            "from the aligner the validators prefer among those tried (its seeds averaged); "
                            "ensemble: from every aligner tried, all seeds averaged",
        "normalise": "features mode: source standardises both domains with the source's statistics; per-domain "
                     "standardises each domain with its own (the saved model carries the target's)",
    }


def auto_candidates(mode: str = "features") -> tuple[str, ...]:
    """What ``method="auto"`` tries besides source-only: every registered aligner, and in features
    mode curriculum self-training."""
    return (*ALIGNERS.names(), *((SELF_TRAIN,) if mode == "features" else ()))


@dataclass
class DomainResult:
    """Everything ``adapt_domain`` found; ``head`` (and the backbone, in finetune mode) is the kept model.

    ``chosen`` names the alignment kept; ``label_shift["applied"]`` says whether ``head`` also
    re-weights to the estimated target proportions (a ``PriorAdjusted`` head)."""

    chosen: str
    head: nn.Module
    backbone_trained: bool
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    reasons: list[str]
    gap_before: dict[str, Any]
    gap_after: dict[str, Any]
    label_shift: dict[str, Any] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(default_factory=dict)  # the label-shift check of per-domain statistics
    proportion_check: dict[str, Any] = field(default_factory=dict)  # the guard's class-proportion check

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "summary": self.summary, "reasons": self.reasons, "runs": self.runs,
                "gap_before": self.gap_before, "gap_after": self.gap_after, "label_shift": self.label_shift,
                "normalisation": self.normalisation, "proportion_check": self.proportion_check}


def check_domains(source: Dataset, target: Dataset) -> None:
    """The errors a user can make when pairing a source with a target."""
    if len(target) == 0:
        raise DataError(f"The target data {target.source} is empty.",
                        fix="point --target at the unlabelled data from where the model will be used.")
    if source.modality != target.modality:
        raise DataError(f"The source {source.source} holds {source.modality}s but the target {target.source} holds "
                        f"{target.modality}s.", fix="adapt between two image sets or between two text sets.")
    if target.labels is not None:
        extra = sorted(set(target.labels) - set(source.labels or []))
        if extra:
            raise DataError(f"The target {target.source} has label(s) the source does not: {', '.join(extra[:10])}.",
                            fix=f"the source's labels are: {', '.join(source.label_names)}; rename the target's "
                                "folders / labels to match, or remove its labels (they are only used for evaluation).")


def _method_list(config: AdaptConfig, candidates: tuple[str, ...] | None = None) -> list[str]:
    if config.method == "auto":
        return [SOURCE_ONLY, *(candidates if candidates is not None else auto_candidates(config.mode))]
    return [SOURCE_ONLY] if config.method == SOURCE_ONLY else [SOURCE_ONLY, config.method]


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def adapt_domain(backbone: Any, parts: Splits, target: Dataset, label_names: list[str], y: dict[str, np.ndarray],
                 config: AdaptConfig, *, seeds: tuple[int, ...] = (0,), target_labels: np.ndarray | None = None,
                 features: dict[str, np.ndarray] | None = None, device: Any = None, progress: bool = True,
                 candidates: tuple[str, ...] | None = None, guard_with_labels: bool = True,
                 log: Callable[[str], None] = lambda m: None) -> DomainResult:
    """Train source-only and the chosen alignment method(s) over ``seeds``; choose; guard.

    ``features`` (mode ``features``): frozen-backbone features for ``train``, ``val`` and
    ``target``. ``y``: integer source labels for ``train`` and ``val``. ``candidates``: the
    aligners ``method="auto"`` tries (default: every registered one).
    """
    check_domains(parts.train, target)
    finetune = config.mode == "finetune"
    if candidates is not None:
        allowed = auto_candidates(config.mode)
        unknown = [c for c in candidates if c not in allowed]
        if unknown or not candidates:
            raise ConfigError(f"`candidates` must name registered aligners, got {list(candidates)!r}.",
                              fix=f"use some of: {', '.join(allowed)}.")
    if finetune and (config.method == SELF_TRAIN or config.normalise != "source"):
        what = "method='self-train'" if config.method == SELF_TRAIN else f"normalise={config.normalise!r}"
        raise ConfigError(f"{what} works on frozen features only, not with mode='finetune'.",
                          fix="use mode='features' (the default), or another method with normalise='source'.")
    k = len(label_names)
    if finetune:
        pristine = copy.deepcopy(backbone.state_dict())
        src_train, src_val, tgt = parts.train, parts.val, target
        dim = backbone.card.feature_dim
    else:
        if features is None:
            raise ConfigError("adapt_domain in 'features' mode needs the cached features.")
        src_train = feature_dataset(features["train"], parts.train)
        src_val = feature_dataset(features["val"], parts.val)
        tgt = feature_dataset(features["target"], target)
        dim = features["train"].shape[1]
        mean, scale = standardiser(features["train"])
    methods = _method_list(config, candidates)
    per_domain = not finetune and config.normalise == "per-domain"
    normalisation: dict[str, Any] = {}
    gate_reasons: list[str] = []
    mixture: np.ndarray | None = None  # the class mixture that best explains the target's mean features
    if not finetune:
        assert features is not None
        share, mixture = mixture_explained_share(features["train"], y["train"], features["target"], k)
    if not finetune and (per_domain or SELF_TRAIN in methods) and len(target) < MIN_TARGET_FOR_STATISTICS:
        methods, per_domain = _without_target_statistics(
            methods, per_domain, f"the target has {len(target)} item(s); its own feature statistics need at least "
                                 f"{MIN_TARGET_FOR_STATISTICS}", gate_reasons, log)
    if not finetune and (per_domain or SELF_TRAIN in methods):
        assert mixture is not None
        # Per-domain statistics assume the inputs moved; when a change of class proportions
        # explains the target's mean shift, they would erase it: keep the source's statistics.
        normalisation = {"label_shift_share": share, "mixture": mixture.tolist(), "threshold": LABEL_SHIFT_SHARE,
                         "per_domain_allowed": share < LABEL_SHIFT_SHARE}
        if share >= LABEL_SHIFT_SHARE:
            methods, per_domain = _without_target_statistics(
                methods, per_domain, f"{100 * share:.0f}% of the target's mean shift is a change of class proportions "
                                     "(label shift), which per-domain statistics would erase", gate_reasons, log)
    target_stats: tuple[np.ndarray, np.ndarray] | None = None
    # per-domain: source train / val on the source's statistics, the target on its own
    pd_data: tuple[Dataset, Dataset, Dataset] | None = None
    # Features mode: the method-choosing validators read reverse validation in one space shared by
    # every candidate (the backbone's features, each domain on its own statistics, rows L2-normalised),
    # not in each model's own embedding: a bottleneck trained on the source makes any labelling of the
    # target it produces look consistent there, so readings from different spaces do not compare.
    common: dict[str, np.ndarray] | None = None
    if not finetune and (len(target) >= 2 or per_domain or SELF_TRAIN in methods):
        assert features is not None
        target_stats = domain_statistics(features["target"], f"target features ({target.source})")
        common = {"z_t": normalise(features["target"], *target_stats), "z_s": normalise(features["val"], mean, scale)}
        if per_domain:
            pd_data = (feature_dataset((features["train"] - mean) / scale, parts.train),
                       feature_dataset((features["val"] - mean) / scale, parts.val),
                       feature_dataset((features["target"] - target_stats[0]) / target_stats[1], target))

    def outputs(model: Any, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Softmax and bottleneck embedding over a whole data set (no augmentation, eval mode)."""
        was = model.training
        model.eval()
        probs, embs = [], []
        dev = next(iter(model.head.parameters())).device
        with torch.inference_mode():
            for s in range(0, len(data), 256):
                items = [data.load(i) for i in range(s, min(s + 256, len(data)))]
                z = model.embed({n: v.to(dev) for n, v in model.backbone.preprocess(items).items()})
                probs.append(model.classify(z).float().softmax(1).cpu().numpy())
                embs.append(z.float().cpu().numpy())
        model.train(was)
        return np.concatenate(probs), np.concatenate(embs)

    def validator_inputs(model: Any, t_data: Dataset, v_data: Dataset) -> tuple[np.ndarray, dict[str, Any]]:
        """Target probabilities, and the embeddings and labels reverse validation also needs
        (plus the source validation probabilities, which the label-shift estimators read)."""
        proba, z_t = outputs(model, t_data)
        proba_s, z_s = outputs(model, v_data)
        return proba, {"z_t": z_t, "z_s": z_s, "y_s": y["val"], "proba_s": proba_s}

    def estimate(proba_s: np.ndarray, proba_t: np.ndarray, prior: np.ndarray, seed: int,
                 bootstrap: int = 0) -> PriorEstimate:
        return estimate_prior(config.shift_estimator, proba_s, y["val"], proba_t, source_prior=prior,
                              bootstrap=bootstrap, seed=seed)

    def _train_one(method: str, seed: int) -> tuple[dict[str, Any], nn.Module, np.ndarray, np.ndarray,
                                                    dict[str, Any], np.ndarray]:
        started, cpu_started = time.perf_counter(), time.process_time()
        torch.manual_seed(seed)
        head = BottleneckHead(dim, k, config.bottleneck, config.bottleneck_dropout)
        # Per-domain: the aligners read features already standardised per domain (the head's own
        # buffers stay 0 / 1 in training and take the target's statistics when the model is kept).
        pd = pd_data is not None and method != SOURCE_ONLY
        s_train, s_val, t_data = pd_data if pd else (src_train, src_val, tgt)  # type: ignore[misc]
        if not finetune and not pd:
            head.mean.copy_(torch.as_tensor(mean))
            head.std.copy_(torch.as_tensor(scale))
        elif finetune:
            backbone.load_state_dict(pristine)
        body = backbone if finetune else CachedFeatures(backbone.card)
        aligner = None if method == SOURCE_ONLY else build_aligner(method, config.bottleneck, k)
        trade = config.trade_off or TRADE_OFF.get(method, 1.0)
        # Under label shift the aligners see the source at the target's class proportions
        # (importance-weighted by resampling), or they would align mismatched mixtures of classes.
        if weighted is not None and method != SOURCE_ONLY:
            train_data, train_y, prior = weighted[:3]
            if pd:
                train_data = feature_dataset((features["train"][weighted[3]] - mean) / scale,  # type: ignore[index]
                                             train_data)
        else:
            train_data, train_y, prior = s_train, y["train"], train_prior
        log(f"Domain adaptation: {method}, seed {seed}" + (" (per-domain standardisation)" if pd else ""))

        def epoch_score(model: Any) -> float:
            proba, context = validator_inputs(model, t_data, s_val)
            return VALIDATORS.get(config.validator)(proba, **context)

        result = train(body, head, train_data, s_val, train_y, y["val"], config, seed=seed,
                       device=str(device) if device is not None else None, progress=progress,
                       target_data=t_data, aligner=aligner, trade_off=trade, val_score=epoch_score)
        proba, context = validator_inputs(Classifier(body, head, 0.0), t_data, s_val)
        proba_s = context.pop("proba_s")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        row: dict[str, Any] = {"method": method, "seed": seed, "seconds": seconds, "cpu_seconds": cpu,
                               "best_epoch": result.best_epoch, "source_val_accuracy": result.best_val_accuracy,
                               "normalise": "per-domain" if pd else "source",
                               **validator_readings(proba, **{**context, **(common or {})})}
        if pd:
            assert target_stats is not None
            with torch.no_grad():  # deployed on the target: its statistics go into the head
                head.mean.copy_(torch.as_tensor(target_stats[0]))
                head.std.copy_(torch.as_tensor(target_stats[1]))
        return row, head, proba, proba_s, context, prior

    shift = config.label_shift != "off"
    train_prior = source_proportions(y["train"], k)
    # the source resampled to the target's proportions: data, labels, their proportions, the indices
    weighted: tuple[Dataset, np.ndarray, np.ndarray, np.ndarray] | None = None
    weighting: dict[str, Any] = {"used": False}
    runs: list[dict[str, Any]] = []
    warned: set[str] = set()  # estimator warnings already logged
    kept: dict[tuple[str, int], tuple[nn.Module, dict[str, torch.Tensor] | None]] = {}
    probas: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # source val, target, prior
    self_trained: tuple[dict[str, Any], nn.Module, np.ndarray, dict[str, Any]] | None = None
    # the guard's class-proportion check: source-only's estimate of the target proportions, per seed
    reference: dict[int, tuple[np.ndarray, np.ndarray | None, dict[str, Any]]] = {}
    for method in methods:
        # Only when asked ("on"): fed a wrong estimate (a large input shift breaks the estimators),
        # the resampled source made MMD collapse onto one class on MNIST -> UCI digits.
        if config.label_shift == "on" and method != SOURCE_ONLY and weighted is None and not weighting.get("decided"):
            weighted, weighting = _importance_weighting(probas, seeds[0], estimate, train_prior, parts, features,
                                                        y["train"], finetune, log, mixture)
        for seed in seeds:
            if method == SELF_TRAIN:
                assert features is not None and target_stats is not None
                if self_trained is None:  # deterministic (L-BFGS on fixed data): one fit serves every seed
                    log(f"Domain adaptation: {method} (deterministic: one fit for every seed)")
                    start, why = _self_train_start(config, methods, runs, probas, seeds)
                    if why:
                        log(why)
                    self_trained = _self_train(features, y, k, mean, scale, target_stats, start)
                row0, head, proba, context = self_trained
                context = dict(context)
                proba_s = context.pop("proba_s")
                row = {**row0, "seed": seed}
                prior = train_prior
            else:
                row, head, proba, proba_s, context, prior = _train_one(method, seed)
            if target_labels is not None:
                row["target_accuracy"] = float((proba.argmax(1) == target_labels).mean())
            if method == SOURCE_ONLY:
                ref = estimate(proba_s, proba, prior, seed)
                trust = proportions_trusted(proba_s, proba, ref.target, mixture)[1] if ref.ok else {
                    "trusted": False, "why": ref.warning}
                reference[seed] = (proba, ref.target, trust)
                row["proportion_excess"] = 0.0
            elif seed in reference and reference[seed][1] is not None:
                row["proportion_excess"] = proportion_excess(proba, reference[seed][0], reference[seed][1])
            runs.append(row)
            log("  " + ", ".join(f"{a} {b:.4f}" if isinstance(b, float) else f"{a} {b}" for a, b in row.items()))
            kept[(method, seed)] = (head, {n: v.detach().clone() for n, v in backbone.state_dict().items()}
                                    if finetune else None)
            probas[(method, seed)] = (proba_s, proba, prior)
            if shift:
                est = estimate(proba_s, proba, prior, seed)
                if est.ok:
                    corrected = est.correct(proba)  # calibrated, then moved to the estimated proportions
                    prow: dict[str, Any] = {**row, "method": method + PRIOR,
                                            **validator_readings(corrected, **{**context, **(common or {})}),
                                            "estimated_proportions": est.target.tolist()}  # type: ignore[union-attr]
                    if target_labels is not None:
                        prow["target_accuracy"] = float((corrected.argmax(1) == target_labels).mean())
                    if seed in reference and reference[seed][1] is not None:
                        prow["proportion_excess"] = proportion_excess(corrected, reference[seed][0],
                                                                      reference[seed][1])
                    runs.append(prow)
                elif est.warning not in warned:  # the same reason for every method and seed: say it once
                    warned.add(str(est.warning))
                    log(f"  {est.warning}")

    checks = [reference[s][2] for s in seeds if s in reference]
    trusted = bool(checks) and all(c["trusted"] for c in checks)
    proportion_check: dict[str, Any] = {"trusted": trusted, "per_seed": checks, "max_excess": PROPORTION_EXCESS,
                                        "estimates": [None if reference[s][1] is None else reference[s][1].tolist()
                                                      for s in seeds if s in reference]}
    summary: dict[str, dict[str, Any]] = {}
    keys = ("source_val_accuracy", *VALIDATORS.names(), *(("target_accuracy",) if target_labels is not None else ()),
            *(("proportion_excess",) if trusted else ()))
    for method in [m for base in methods for m in (base, base + PRIOR)]:
        rows = [r for r in runs if r["method"] == method]
        if rows:
            summary[method] = {key: _mean_std([r[key] for r in rows]) for key in keys if all(key in r for r in rows)}
    aligned = {m: v for m, v in summary.items() if not m.endswith(PRIOR)}
    labelled = target_labels is not None and guard_with_labels
    chosen, reasons = choose(aligned, config, labelled=labelled)
    if checks and not trusted and not labelled and config.guard and len(aligned) > 1:
        readings = "; ".join(f"confidence drop {c['confidence_drop']:.2f}" + (
            f", estimate vs feature-mean mixture L1 {c['mixture_l1']:.2f}" if "mixture_l1" in c else "")
            for c in checks if "confidence_drop" in c)
        reasons.insert(0, "class-proportion check not applied: source-only's estimate of the target's class "
                          f"proportions is not trusted ({readings or 'no estimate'}), so the validators alone choose")
    reasons = gate_reasons + reasons
    head, state = kept[(chosen, seeds[0])]
    if finetune and state is not None:
        backbone.load_state_dict(state)
    to_target = None  # the chosen head reads target-normalised inputs: source rows are mapped there for the gap
    if target_stats is not None and (chosen == SELF_TRAIN or (per_domain and chosen != SOURCE_ONLY)):
        ts = target_stats
        to_target = lambda x: (x - mean) / scale * ts[1] + ts[0]  # noqa: E731
    before, after = _gaps(head, backbone, features, parts, target, finetune, k, runs, to_target)
    label_shift: dict[str, Any] = {"mode": config.label_shift, "estimator": config.shift_estimator,
                                   "importance_weighting": weighting, "applied": False}
    if shift:
        proba_s, proba_t, prior = probas[(chosen, seeds[0])]
        est = estimate(proba_s, proba_t, prior, seeds[0], bootstrap=100)
        # The same two label-free signs as the guard's class-proportion check, read on the kept model.
        trust = proportions_trusted(proba_s, proba_t, est.target, mixture)[1] if est.ok else {"trusted": False}
        apply, why = _decide_prior(est, chosen, summary, config, labelled=labelled, trust=trust,
                                   val_counts=np.bincount(y["val"], minlength=k), class_names=list(label_names))
        reasons.append(why)
        label_shift.update({"estimate": est.to_dict(), "applied": apply, "trust": trust})
        if apply:
            t, offsets = est.calibrated_offsets()  # type: ignore[misc]
            head = PriorAdjusted(with_temperature(head, t), torch.as_tensor(offsets, dtype=torch.float32))
    return DomainResult(chosen, head, finetune and chosen != SOURCE_ONLY, runs, summary, reasons, before, after,
                        label_shift, normalisation, proportion_check)


def _self_train_start(config: AdaptConfig, methods: list[str], runs: list[dict[str, Any]],
                      probas: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]], seeds: tuple[int, ...]
                      ) -> tuple[tuple[str, np.ndarray] | None, str]:
    """With ``self_train_start="aligners"``: the aligner the validators prefer among those already
    trained (the label-free ranking of :func:`choose`, without the guard), and its target
    probabilities averaged over the seeds, for self-training's first pseudo-labels. With
    ``"ensemble"``: every aligner tried, all seeds, averaged."""
    if config.self_train_start == "probe":
        return None, ""
    tried = [m for m in methods if m not in (SOURCE_ONLY, SELF_TRAIN) and all((m, s) in probas for s in seeds)]
    if not tried:
        return None, "self-train starts from the source probe: no aligner was trained before it"
    if config.self_train_start == "ensemble":
        return ("ensemble", np.mean([probas[(m, s)][1] for m in tried for s in seeds], axis=0)), (
            f"self-train starts from the average of {', '.join(tried)} ({len(seeds)} seed(s) each)")
    summary = {m: {key: _mean_std([r[key] for r in runs if r["method"] == m])
                   for key in ("source_val_accuracy", *CHOOSING)} for m in (SOURCE_ONLY, *tried)}
    best = tried[0] if len(tried) == 1 else choose(summary, AdaptConfig(guard=False), labelled=False)[0]
    return (best, np.mean([probas[(best, s)][1] for s in seeds], axis=0)), (
        f"self-train starts from {best}'s pseudo-labels (the validators' choice among {', '.join(tried)}, "
        f"{len(seeds)} seed(s) averaged)")


def _self_train(features: dict[str, np.ndarray], y: dict[str, np.ndarray], k: int, mean: np.ndarray,
                scale: np.ndarray, target_stats: tuple[np.ndarray, np.ndarray],
                start: tuple[str, np.ndarray] | None = None
                ) -> tuple[dict[str, Any], nn.Module, np.ndarray, dict[str, Any]]:
    """Per-domain standardisation + L2 rows, C by source validation accuracy, curriculum
    self-training (its first pseudo-labels from ``start``'s target probabilities when given);
    returns the run's row, the deployable head (target statistics inside), the target
    probabilities and the validators' context (normalised features as the embeddings)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    zs, zv = normalise(features["train"], mean, scale), normalise(features["val"], mean, scale)
    zt = normalise(features["target"], *target_stats)
    C, scores = choose_strength(zs, y["train"], zv, y["val"], k)
    fit = curriculum_self_train(zs, y["train"], zt, k, C, init=None if start is None else start[1])
    proba, proba_s = fit.proba(zt), fit.proba(zv)
    context = {"z_t": zt, "z_s": zv, "y_s": y["val"], "proba_s": proba_s}
    row: dict[str, Any] = {"method": SELF_TRAIN, "seconds": time.perf_counter() - started,
                           "cpu_seconds": time.process_time() - cpu_started, "best_epoch": len(fit.rounds),
                           "source_val_accuracy": float((proba_s.argmax(1) == y["val"]).mean()),
                           "normalise": "per-domain", "C": C, "C_scores": {str(c): v for c, v in scores.items()},
                           "started_from": "probe" if start is None else start[0],
                           "pseudo_labelled": [r["pseudo_labelled"] for r in fit.rounds],
                           **validator_readings(proba, **{n: v for n, v in context.items() if n != "proba_s"})}
    return row, as_bottleneck_head(fit.weight, fit.bias, *target_stats), proba, context


def _without_target_statistics(methods: list[str], per_domain: bool, why: str, reasons: list[str],
                               log: Callable[[str], None]) -> tuple[list[str], bool]:
    """Drop what standardises the target with its own statistics (self-train, per-domain
    normalisation), adding and logging one reason for each that was asked for."""
    said = []
    if SELF_TRAIN in methods:
        methods = [m for m in methods if m != SELF_TRAIN]
        said.append(f"self-train not tried: {why}")
    if per_domain:
        said.append(f"normalise=per-domain not applied: {why}; the source's statistics are used")
    for r in said:
        log(r)
    reasons += said
    return methods, False


def _importance_weighting(probas: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]], seed: int,
                          estimate: Callable[..., PriorEstimate], train_prior: np.ndarray, parts: Splits,
                          features: dict[str, np.ndarray] | None, y_train: np.ndarray, finetune: bool,
                          log: Callable[[str], None], mixture: np.ndarray | None = None
                          ) -> tuple[tuple[Dataset, np.ndarray, np.ndarray, np.ndarray] | None, dict[str, Any]]:
    """The source training split resampled to the target's class proportions, as source-only's
    first seed estimates them, when they moved and the estimate passes the trust check (else None:
    the aligners train on the source as is). Unlike the prior correction under ``on``, an untrusted
    estimate is never used here: every aligner would train on it, and a wrong one made MMD collapse
    onto one class on MNIST -> UCI digits."""
    proba_s, proba_t, _ = probas[(SOURCE_ONLY, seed)]
    est = estimate(proba_s, proba_t, train_prior, seed, bootstrap=100)
    info: dict[str, Any] = {"decided": True, "used": False, "estimate": est.to_dict()}
    if not est.ok:
        info["reason"] = est.warning
        log(f"Importance weighting off: {est.warning}")
        return None, info
    if not label_shift_significant(est):
        info["reason"] = "the estimated class proportions match the source's within their intervals"
        return None, info
    trust = proportions_trusted(proba_s, proba_t, est.target, mixture)[1]  # the prior correction's signs
    if not trust.get("trusted", False):
        info["reason"] = (f"the estimated class proportions are not trusted (confidence drop "
                          f"{trust['confidence_drop']:.2f}" + (f", estimate vs feature-mean mixture L1 "
                                                               f"{trust['mixture_l1']:.2f}" if "mixture_l1" in trust
                                                               else "") + ")")
        log(f"WARNING: importance weighting off: {info['reason']}; the aligners train on the source as is")
        return None, info
    w = class_weights(est)
    idx = resample_indices(y_train, w, seed=seed)  # type: ignore[arg-type]
    data = parts.train.subset(idx)
    if not finetune:
        assert features is not None
        data = feature_dataset(features["train"][idx], data)
    new_y = y_train[idx]
    info.update({"used": True, "class_weights": w.tolist(),  # type: ignore[union-attr]
                 "reason": "the aligners train on the source resampled to the estimated target proportions"})
    log("Importance weighting: the aligners see the source resampled to the estimated target class proportions")
    return (data, new_y, source_proportions(new_y, len(train_prior)), idx), info


def _decide_prior(est: PriorEstimate, chosen: str, summary: dict[str, dict[str, Any]], config: AdaptConfig,
                  labelled: bool, trust: dict[str, Any] | None = None, val_counts: np.ndarray | None = None,
                  class_names: list[str] | None = None) -> tuple[bool, str]:
    """Whether the kept model's probabilities are re-weighted to the estimated target proportions, and why.

    ``on``: whenever they could be estimated. ``auto``: when the estimate can be trusted and moved.
    Trusted (``trust``, from :func:`~headstart.domain.validators.proportions_trusted` on the kept
    model's outputs): its confidence drops little from the source validation split to the target,
    and the estimate agrees with the class mixture that explains the target's mean features; when
    either fails the estimators' assumption (each class looks the same in both domains) is broken,
    and the correction stands aside. Moved: some class's share by at least SHIFT_TOLERANCE, with
    its bootstrap interval clear of the source share (Saerens et al.'s likelihood-ratio test is
    reported but not used, as it also flags the sampling noise of the source validation split's
    own proportions). No validator is asked: information maximisation rewards predictions spread
    evenly over the classes, which a correct skew is not, and reverse validation picked wrongly
    both ways on a text pair with label and input shift. With target labels given for evaluation,
    target accuracy must not drop instead.
    Under ``auto`` without target labels the correction also needs at least
    MIN_CALIBRATION_PER_CLASS source validation items of every class (``val_counts``): EM's
    temperature and per-class biases are fitted on them, and on about 8 per class they came out
    extreme (temperature 0.12, a bias of +5) and cost 7.5 points on a text target.
    """
    if not est.ok:
        return False, str(est.warning)
    names = class_names or [str(i) for i in range(len(est.target))]  # type: ignore[arg-type]
    shares = ", ".join(f"{n} {100 * q:.0f}%" for n, q in zip(names, est.target))  # type: ignore[arg-type]
    distrusted = trust is not None and not trust.get("trusted", False)
    signs = []
    if distrusted:
        if trust.get("confidence_drop", 0.0) > trust.get("max_confidence_drop", float("inf")):  # type: ignore[union-attr]
            signs.append(f"{chosen}'s mean confidence drops by {trust['confidence_drop']:.2f} from the source to the "  # type: ignore[index]
                         f"target (more than {trust['max_confidence_drop']:.2f})")  # type: ignore[index]
        if trust.get("mixture_l1", 0.0) > trust.get("max_mixture_l1", float("inf")):  # type: ignore[union-attr]
            signs.append(f"the estimate differs from the class mixture of the target's mean features by L1 "
                         f"{trust['mixture_l1']:.2f} (more than {trust['max_mixture_l1']:.2f})")  # type: ignore[index]
    why_not = ' and '.join(signs) or 'a trust sign failed'
    if config.label_shift == "on":
        if distrusted and float(np.max(est.target)) >= DEGENERATE_SHARE:  # type: ignore[arg-type]
            return False, (f"no prior correction, although label_shift=on: the estimate puts "
                           f"{100 * float(np.max(est.target)):.0f}% of the target in one class ({shares}) and is not "
                           f"trusted, as {why_not}; every prediction would become that class")
        if distrusted:
            return True, (f"WARNING: prior correction on (label_shift=on) although the estimate is not trusted, as "
                          f"{why_not}: target class proportions estimated by {est.method} as {shares}; "
                          "label_shift=auto would not correct here")
        return True, f"prior correction on: target class proportions estimated by {est.method} as {shares}"
    if not labelled and distrusted:
        return False, (f"no prior correction: the estimated target class proportions ({shares}) are not trusted, as "
                       f"{why_not}: the inputs shift too much for the estimators")
    if not labelled and val_counts is not None and int(np.min(val_counts)) < MIN_CALIBRATION_PER_CLASS:
        few = int(np.argmin(val_counts))
        return False, (f"no prior correction: its calibration would rest on {int(val_counts[few])} source validation "
                       f"item(s) of class {names[few]} (at least {MIN_CALIBRATION_PER_CLASS} per class are needed); "
                       f"estimated target class proportions: {shares}. More source data or a larger --val helps")
    if not label_shift_significant(est):
        return False, (f"no prior correction: the target class proportions ({shares}) did not measurably move (no "
                       f"share moved by {100 * SHIFT_TOLERANCE:.0f} points with its interval clear of the source's)")
    if labelled:
        plain, fixed = summary[chosen], summary.get(chosen + PRIOR)
        if fixed is None:
            return False, "no prior correction: the proportions could not be estimated for every seed"
        if fixed["target_accuracy"][0] <= plain["target_accuracy"][0]:  # a tie is no reason to change the model
            change = "drops" if fixed["target_accuracy"][0] < plain["target_accuracy"][0] else "does not rise"
            return False, (f"no prior correction: target accuracy {change} with it ({fixed['target_accuracy'][0]:.3f} "
                           f"vs {plain['target_accuracy'][0]:.3f}, by the target labels given for evaluation)")
        return True, (f"prior correction: target class proportions estimated by {est.method} as {shares}; target "
                      f"accuracy {fixed['target_accuracy'][0]:.3f} vs {plain['target_accuracy'][0]:.3f} without")
    return True, (f"prior correction: target class proportions estimated by {est.method} as {shares} (moved beyond "
                  "their intervals; the estimate passes the trust check)")


def choose(summary: dict[str, dict[str, Any]], config: AdaptConfig, labelled: bool) -> tuple[str, list[str]]:
    """The method to keep, and why, in plain words.

    Without target labels: first the class-proportion check, when ``proportion_excess`` is in the
    summary (``adapt_domain`` puts it there only when source-only's estimate of the target's class
    proportions can be trusted, see :func:`~headstart.domain.validators.proportions_trusted`): a
    candidate whose predicted class shares lie further from that estimate than source-only's own
    predictions do, by more than PROPORTION_EXCESS (L1), is not considered. Then each candidate's
    validators are ranked across methods, and the best mean rank wins (ties to the better source
    validation accuracy). The guard then compares the winner with source-only: it must be at least
    as good on *both* validators, else source-only is kept. With target labels (evaluation only),
    the guard compares target accuracy instead.
    """
    names = list(CHOOSING)
    methods = list(summary)
    adapted = [m for m in methods if m != SOURCE_ONLY]
    reasons: list[str] = []
    if not adapted:
        return SOURCE_ONLY, ["only source-only was asked for"]
    if config.guard and not labelled:
        distorted = {m: summary[m]["proportion_excess"][0] for m in adapted if "proportion_excess" in summary[m]
                     and summary[m]["proportion_excess"][0] > PROPORTION_EXCESS}
        if distorted:
            reasons.append("class-proportion check: " + ", ".join(f"{m} (L1 {v:+.3f})" for m, v in distorted.items())
                           + " predict class shares further from the target proportions that source-only's outputs "
                           f"estimate than source-only's own predictions, by more than {PROPORTION_EXCESS:.2f}; "
                           "not considered")
            adapted = [m for m in adapted if m not in distorted]
            if not adapted:
                reasons.append("no candidate left, so source-only is kept")
                return SOURCE_ONLY, reasons
    if len(adapted) == 1:
        best = adapted[0]
    else:
        ranks = {m: 0.0 for m in adapted}
        for v in names:
            order = sorted(adapted, key=lambda m: -summary[m][v][0])
            for r, m in enumerate(order):
                ranks[m] += r / len(names)
        best = min(adapted, key=lambda m: (ranks[m], -summary[m]["source_val_accuracy"][0]))
        reasons.append("label-free choice among " + ", ".join(adapted) + f": {best} has the best mean rank over the "
                       f"validators ({', '.join(names)}), read on the target domain")
    s, b = summary[SOURCE_ONLY], summary[best]
    readings = "; ".join(f"{v}: {b[v][0]:.3f} vs source-only {s[v][0]:.3f}" for v in names)
    if not config.guard:
        reasons.append(f"kept {best} (guard off); {readings}")
        return best, reasons
    if labelled:
        gain = b["target_accuracy"][0] - s["target_accuracy"][0]
        if gain <= 0:
            reasons.append(f"{'negative transfer' if gain < 0 else 'no gain'}: {best} reaches {b['target_accuracy'][0]:.3f} target accuracy vs "
                           f"{s['target_accuracy'][0]:.3f} for source-only (by the target labels given for "
                           "evaluation), so source-only is kept")
            return SOURCE_ONLY, reasons
        reasons.append(f"{best} beats source-only on the labelled target examples by {gain * 100:+.1f} points")
        return best, reasons
    worse = [v for v in names if b[v][0] <= s[v][0] + VALIDATOR_TIE]
    if worse:
        reasons.append(f"negative-transfer guard: {best} does not look better than source-only by {', '.join(worse)} "
                       f"({readings}; within {VALIDATOR_TIE} is a tie), so source-only is kept")
        return SOURCE_ONLY, reasons
    reasons.append(f"{best} looks better than source-only by every validator ({readings})")
    return best, reasons


def _gaps(head: nn.Module, backbone: Any, features: dict[str, np.ndarray] | None, parts: Splits, target: Dataset,
          finetune: bool, k: int, runs: list[dict[str, Any]],
          to_target: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """MMD and proxy A-distance between source and target: on the backbone's features (before)
    and in the kept model's bottleneck (after). Only in features mode, where both are cheap.
    ``to_target``: for a head normalising with the target's statistics, the map that puts source
    rows through the source's statistics instead."""
    if finetune or features is None or not hasattr(head, "embed"):
        return {}, {}
    xs, xt = features["train"], features["target"]
    with torch.inference_mode():
        head.eval()
        zs = head.embed(torch.as_tensor(xs if to_target is None else to_target(xs), dtype=torch.float32)).numpy()
        zt = head.embed(torch.as_tensor(xt)).numpy()

    def gap(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        return {"mmd2": mmd_test(a, b, permutations=0)["mmd2"], "pad": proxy_a_distance(a, b)["pad"]}

    return gap(xs, xt), gap(zs, zt)


def run_domain_adapt(backbone: Any, inputs: StrategyInputs, config: AdaptConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    feats = {"train": inputs.features["train"], "val": inputs.features["val"], "target": inputs.features["target"]}
    result = adapt_domain(backbone, inputs.splits, inputs.target, inputs.label_names,
                          inputs.labels, config, seeds=tuple(inputs.seed + i for i in range(config.seeds)),
                          target_labels=inputs.target_labels, features=feats, device=inputs.device,
                          progress=inputs.progress, log=inputs.log)
    info = {**result.to_dict(), "chosen_strategy": result.chosen,
            "prior_correction": bool(result.label_shift.get("applied"))}
    return result.head, info, result.backbone_trained


register_strategy("domain-adapt", AdaptConfig, run_domain_adapt,
                  "align source and unlabelled target data (DANN, CDAN, CORAL, MMD, MCC, self-training), guard against "
                  "negative transfer",
                  needs_features=True, needs_target=True, trains="may")
