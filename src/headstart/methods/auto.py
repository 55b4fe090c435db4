"""``auto``: try the strategies on the validation split within a time budget, keep the best, say why.

The search, in order:

1. The cheap candidates on cached features (the linear probe, class prototypes, and pseudo-labels
   when unlabelled items are given) always run: they take seconds, and the probe is the floor the
   result is measured against.
2. The fine-tuning candidates (LP-FT, SetFit for text, LoRA when the backbone has attention
   projections, full, partial; in that order, each at its default learning rate before any at
   another of ``lr_factors``) enter a successive-halving race (Jamieson & Talwalkar 2016; AutoGluon and
   Optuna's pruners work the same way): a short first rung for every candidate, then the best
   third continue at full length. Each run's cost is estimated from timed forward + backward
   batches on real training items before it starts; a run that would not fit in what is left of
   the budget is skipped and reported as such.
3. A run whose loss stops being a number (diverged) or whose validation accuracy is no better
   than always answering the commonest class (collapsed) is stopped early by the training loop,
   reported, and its learning rate and every larger one of that strategy are excluded.
4. On a small validation split (under ``cv_below`` items, where one item moves the score by a point
   or more) the feature-based candidates and the race's best fine-tuning settings are compared on
   stratified folds of train + validation instead (duplicates kept in one fold), repeated while the
   budget allows: every labelled item is scored once per repetition, and all candidates see the
   same folds, so their difference is paired.
5. The winner has the best score; a fine-tuning run replaces the probe only if it beats it, and
   the card says whether the margin is inside the noise (the Wilson 95% intervals of the two
   scores overlap).

Every candidate tried, its validation score with its interval, its time and its fate go into the
model's info (``search``) and from there into the transfer card.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, HeadstartError
from ..evaluation.intervals import wilson
from ..features import extract_features
from ..options import Config, Constraint, Each, Interval
from .base import STRATEGIES, StrategyInputs, register_strategy

FEATURE_CANDIDATES = ("linear-probe", "prototypes", "pseudo-label")  # pseudo-label: with unlabelled items
# In the order they enter the race, most promising per second first: LP-FT (Kumar et al. 2022)
# keeps the probed head and rarely loses to it; SetFit (texts only) costs several fine-tuning runs
# but was the best single strategy on 8 articles per class (bench/auto.py); LoRA trains a fraction
# of the weights; then full and partial fine-tuning. A tight budget runs the first few.
FINETUNE_CANDIDATES = ("lp-ft", "setfit", "lora", "full", "partial")


@dataclass(frozen=True)
class AutoConfig(Config):
    budget_s: float = 600.0
    candidates: tuple[str, ...] = ()
    lr_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    epochs: int = 0
    first_rung_epochs: int = 1
    keep: float = 1 / 3
    first_rung_share: float = 0.5
    min_per_class: int = 4
    cv_below: int = 100
    folds: int = 3
    cv_repeats: int = 2
    cv_finalists: int = 2
    probe_within_se: bool = True
    type: str = field(default="auto", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "budget_s": Interval(0, low_open=True), "lr_factors": Each(Interval(0, low_open=True), non_empty=True),
        "epochs": Interval(0), "first_rung_epochs": Interval(1), "keep": Interval(0, 1, low_open=True),
        "first_rung_share": Interval(0, 1, low_open=True),
        "min_per_class": Interval(1), "cv_below": Interval(0), "folds": Interval(2), "cv_repeats": Interval(1),
        "cv_finalists": Interval(1)}
    notes: ClassVar[dict[str, str]] = {
        "budget_s": "seconds the search may take (--budget 10m)",
        "candidates": "strategies to try; empty = the probe, prototypes and every fine-tuning strategy "
                      "that suits the backbone and the data",
        "lr_factors": "each fine-tuning candidate's default learning rate times these",
        "epochs": "epochs of a fine-tuning candidate in the last rung; 0 = each strategy's own default",
        "first_rung_epochs": "epochs of every fine-tuning candidate in the first rung",
        "keep": "share of the first rung's candidates that go on to the last",
        "first_rung_share": "at most this share of the budget left when the race starts goes to its first rung, "
                            "so that the best settings can still run at full length",
        "min_per_class": "below this many examples in the smallest class, fine-tuning is not tried",
        "cv_below": "below this many validation items, the finalists are compared on folds of train + val "
                    "(0 = never)",
        "folds": "folds of that comparison",
        "cv_repeats": "repetitions of the folds (new partitions) while the budget allows",
        "cv_finalists": "fine-tuning settings from the race that enter the fold comparison",
        "probe_within_se": "keep the linear probe when its score is within one standard error of the best "
                           "(the one-standard-error rule: the simplest model the data cannot tell apart)"}

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [c for c in self.candidates if c not in STRATEGIES or c in ("auto", "domain-adapt", "zero-shot")]
        if unknown:
            choices = [n for n in STRATEGIES.names() if n not in ("auto", "domain-adapt", "zero-shot")]
            raise ConfigError(f"`candidates` has {', '.join(map(repr, unknown))}, which auto cannot try.",
                              fix=f"choose among: {', '.join(choices)}.")


def parse_budget(text: str) -> float:
    """'90s', '10m', '1.5h', '1h30m', '2m 30s' or plain seconds -> seconds."""
    import re

    units = {"s": 1, "m": 60, "h": 3600}
    pair = r"(\d+(?:\.\d*)?|\.\d+)\s*([smh])"
    raw = text.strip().lower()
    if re.fullmatch(rf"(?:{pair}\s*)+", raw):
        return float(sum(float(n) * units[u] for n, u in re.findall(pair, raw)))
    try:  # one number in any float spelling (1e3, -5s, infs): the caller refuses what is not positive and finite
        return float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ConfigError(f"--budget must look like 90s, 10m, 1h or 1h30m, got {text!r}.") from None


def seconds_per_item(backbone: Any, inputs: StrategyInputs, batch_size: int = 8, batches: int = 2) -> float:
    """Forward + backward seconds per training item, timed on real items (the first batch warms up)."""
    train = inputs.splits.train
    n = min(batch_size, len(train))
    head = nn.Linear(backbone.card.feature_dim, inputs.num_classes)
    y = torch.as_tensor(inputs.labels["train"][:n])
    backbone.train()
    times = []
    for _ in range(batches):
        x = backbone.preprocess([train.load(i) for i in range(n)])
        start = time.perf_counter()
        F.cross_entropy(head(backbone(**x)), y).backward()
        times.append((time.perf_counter() - start) / n)
    backbone.zero_grad(set_to_none=True)
    backbone.eval()
    return min(times)


def run_seconds(per_item: float, epochs: int, n_train: float, n_val: float, passes: float = 1.0) -> float:
    """Training items every epoch (``passes`` times each: a contrastive strategy sees each item in many
    pairs), plus a forward-only pass (about a third of the cost) over validation."""
    return per_item * epochs * (n_train * passes + n_val / 3)


def _passes(config: Any) -> float:
    """How many times an epoch runs each training item through the backbone: once, or for SetFit's
    pairs twice per pair, with ``pairs_per_example`` positives and as many negatives per item."""
    pairs = getattr(config, "pairs_per_example", 0)
    return 4.0 * pairs if pairs else 1.0


def _default_candidates(backbone: Any, inputs: StrategyInputs) -> list[str]:
    from .lora import lora_targets

    names = [n for n in FEATURE_CANDIDATES if n != "pseudo-label" or inputs.pool is not None]
    if backbone.trainable:
        for name in FINETUNE_CANDIDATES:
            if name == "lora" and not (getattr(backbone, "model", None) is not None and lora_targets(backbone.model)):
                continue
            if name == "setfit" and backbone.card.modality != "text":
                continue
            names.append(name)
    return names


def _val_accuracy(backbone: Any, head: nn.Module, info: dict[str, Any], inputs: StrategyInputs, trained: bool) -> float:
    """The strategy's own validation score when it keeps one (the probe's comes from before its refit
    on train + val), else the head on the validation split's features."""
    if "val_accuracy" in info:
        return float(info["val_accuracy"])
    return _head_accuracy(backbone, head, inputs, "val", trained) if len(inputs.labels["val"]) else float("nan")


def _head_accuracy(backbone: Any, head: nn.Module, inputs: StrategyInputs, split: str, trained: bool) -> float:
    """``head`` on a split's items: on its cached features, or re-extracted when the run trained the backbone."""
    feats = (extract_features(backbone, getattr(inputs.splits, split), use_cache=False, progress=False,
                              device=inputs.device) if trained else inputs.features[split])
    with torch.no_grad():
        pred = head.eval()(torch.as_tensor(feats, dtype=torch.float32)).argmax(1).numpy()
    return float((pred == inputs.labels[split]).mean())


def _unwrap_adapters(backbone: Any) -> None:
    """A LoRA run that stopped before merging leaves PEFT's wrapper in place: take it off."""
    inner = getattr(backbone, "model", None)
    if inner is not None and hasattr(inner, "unload") and hasattr(inner, "peft_config"):
        backbone.model = inner.unload()


@dataclass
class _Run:
    strategy: str
    lr: float | None
    epochs: int | None
    rung: int
    val_accuracy: float = float("nan")
    n_val: int = 0
    seconds: float = 0.0
    estimate_s: float | None = None
    status: str = "done"  # done | collapsed | diverged | over budget | failed | skipped
    note: str = ""
    cv_right: int = 0  # items scored right / scored on the folds of train + val
    cv_n: int = 0
    cv_items: int = 0  # distinct items: the repetitions score the same items again, so they set the interval
    cv_seconds: float = 0.0

    @property
    def cv_accuracy(self) -> float:
        return self.cv_right / self.cv_n if self.cv_n else float("nan")

    def score(self) -> tuple[float, int]:
        """The number the winner is chosen by, and how many items it rests on."""
        return (self.cv_accuracy, self.cv_items) if self.cv_n else (self.val_accuracy, self.n_val)

    def row(self) -> dict[str, Any]:
        ci = wilson(self.val_accuracy * self.n_val, self.n_val) if self.n_val and np.isfinite(self.val_accuracy) else None
        out = {"strategy": self.strategy, "lr": self.lr, "epochs": self.epochs, "rung": self.rung,
               "val_accuracy": None if not np.isfinite(self.val_accuracy) else self.val_accuracy,
               "ci95": ci, "seconds": round(self.seconds, 2),
               "estimate_s": None if self.estimate_s is None else round(self.estimate_s, 1),
               "status": self.status, "note": self.note}
        if self.cv_n:
            out.update(cv_accuracy=self.cv_accuracy, cv_n=self.cv_n, cv_items=self.cv_items,
                       cv_ci95=wilson(self.cv_accuracy * self.cv_items, self.cv_items),
                       cv_seconds=round(self.cv_seconds, 2))
        return out


def _label(run: _Run) -> str:
    return run.strategy + (f" lr={run.lr:g}" if run.lr is not None else "") + (
        f", {run.epochs} epoch(s)" if run.epochs is not None else "")


def _config_for(entry: Any, lr: float | None, epochs: int | None) -> Any:
    default = entry.config_class()
    if lr is None:
        return default
    # stop_at_chance: a run still at chance after two epochs has collapsed (loop.train)
    extra = {"stop_at_chance": 2} if hasattr(default, "stop_at_chance") else {}
    return dataclasses.replace(default, lr=lr, epochs=epochs, **extra)


def _final_epochs(entry: Any, config: AutoConfig) -> int:
    return config.epochs or int(getattr(entry.config_class(), "epochs", 1))


def _finalist_order(result: dict[str, Any]) -> tuple[float, int, float]:
    """Best validation score first; on a tie the longer run (a later rung: a handful of validation
    items often cannot tell one epoch from five), then the cheaper."""
    run = result["run"]
    return -run.val_accuracy, -run.rung, run.seconds


def _contenders(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished fine-tuning runs that may go on to the folds: the best setting of each strategy
    (two settings of one strategy would spend the folds telling learning rates apart, not strategies),
    best validation score first. On a tie (a handful of validation items often gives several runs
    100%) the strategy that enters the race first wins, not the cheaper: cheapness would always
    favour a one-epoch run over SetFit, the best single strategy on 8 articles per class."""
    best: dict[str, dict[str, Any]] = {}
    for r in sorted((r for r in results if r["trained"]), key=_finalist_order):
        best.setdefault(r["run"].strategy, r)
    return sorted(best.values(), key=lambda r: (-r["run"].val_accuracy, _race_order(r["run"].strategy)))


def _race_order(name: str) -> int:
    return FINETUNE_CANDIDATES.index(name) if name in FINETUNE_CANDIDATES else len(FINETUNE_CANDIDATES)


def _scale(slowdown: list[float]) -> float:
    """How much longer runs take than timed: the median of measured / estimated so far, never below 1
    (the timing leaves out data loading and scoring, so it errs low, not high)."""
    return max(1.0, float(np.median(slowdown)))


def _n_folds(config: AutoConfig, y: np.ndarray) -> int:
    """Folds of the comparison: ``config.folds``, fewer when the smallest class has fewer items."""
    return min(config.folds, int(np.bincount(y).min())) if len(y) else 0


def _affordable(finalists: list[dict[str, Any]], need: Any, left: Any) -> list[dict[str, Any]]:
    """The leading finalists whose folds fit in what is left of the budget (at worst none)."""
    while finalists and need(finalists) > left():
        finalists = finalists[:-1]
    return finalists


def _fold_seconds(per_item: float, factor: Any, k: int, n: int, cheap_cost: float, finalists: list[dict[str, Any]],
                  epochs: dict[str, int] | None = None) -> float:
    """Estimated seconds of one repetition of the folds: the feature-based candidates (``cheap_cost``,
    measured) and every finalist trained ``k`` times, each on three quarters of a fold's (k-1)/k of
    the ``n`` pooled items (the other quarter is what it tunes on; :func:`_inner_split`), then run
    forward over the tuning and the scored items; ``epochs`` overrides a strategy's epochs (its
    longer run would be the one on the folds)."""
    epochs = epochs or {}
    fit = n * (k - 1) / k
    return cheap_cost + sum(
        k * factor(r["run"].strategy) * run_seconds(per_item, epochs.get(r["run"].strategy, r["run"].epochs or 1),
                                                    0.75 * fit, 0.25 * fit + n / k,
                                                    _passes(STRATEGIES.get(r["run"].strategy).config_class()))
        for r in finalists)


def _fold_inputs(inputs: StrategyInputs, pooled: Any, feats: np.ndarray, y: np.ndarray, fit_idx: np.ndarray,
                 tune_idx: np.ndarray, score_idx: np.ndarray) -> StrategyInputs:
    """The same inputs with train + val re-partitioned: ``fit_idx`` to train on, ``tune_idx`` as the
    validation split a strategy tunes on (its C, its best epoch), ``score_idx`` held out as the
    test split: the fold's score is made on items no choice was made on."""
    splits = dataclasses.replace(inputs.splits, train=pooled.subset(fit_idx, "train"),
                                 val=pooled.subset(tune_idx, "val"), test=pooled.subset(score_idx, "test"))
    return dataclasses.replace(
        inputs, splits=splits,
        features={**inputs.features, "train": feats[fit_idx], "val": feats[tune_idx], "test": feats[score_idx]},
        labels={**inputs.labels, "train": y[fit_idx], "val": y[tune_idx], "test": y[score_idx]})


def _inner_split(fit_idx: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About a quarter of a fold's training items, stratified and with duplicates kept together, as the
    validation split its strategies tune on."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    with warnings.catch_warnings():  # a class with fewer than 4 items: sklearn warns, and still stratifies
        warnings.simplefilter("ignore", UserWarning)
        inner, tune = next(StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed).split(
            fit_idx, y[fit_idx], groups[fit_idx]))
    return fit_idx[inner], fit_idx[tune]


def _held_out_accuracy(backbone: Any, head: nn.Module, fold: StrategyInputs, trained: bool) -> float:
    """The fold's head on its held-out (test) items."""
    return _head_accuracy(backbone, head, fold, "test", trained)


def _pooled(inputs: StrategyInputs) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Train + val as one data set, its features, labels and duplicate groups (content hashes)."""
    from ..data import Dataset

    tr, va = inputs.splits.train, inputs.splits.val
    # The splits' own hashes (kept from validation and splitting): image files are not read again.
    hashes = tr.content_hashes() + va.content_hashes()
    pooled = Dataset(tr.modality, list(tr.items) + list(va.items),
                     list(tr.labels or []) + list(va.labels or []), list(tr.ids) + list(va.ids), source=tr.source,
                     _hashes=hashes)
    feats = np.concatenate([inputs.features["train"], inputs.features["val"]])
    y = np.concatenate([inputs.labels["train"], inputs.labels["val"]])
    _, groups = np.unique(hashes, return_inverse=True)
    return pooled, feats, y, groups


def run_auto(backbone: Any, inputs: StrategyInputs, config: AutoConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    start = time.perf_counter()
    log = inputs.log
    # The estimates come from a timing on a few batches; on a busy machine a run can take longer than
    # that said, so every run also stops at the budget's end and is scored on what it learnt by then.
    deadline = time.monotonic() + config.budget_s
    quiet = dataclasses.replace(inputs, runtime=inputs.runtime.with_(progress=False, deadline=deadline),
                                checkpoint_dir=None, resume=False)
    n_val = len(inputs.labels["val"])
    candidates = list(dict.fromkeys(config.candidates)) or _default_candidates(backbone, inputs)
    runs: list[_Run] = []
    # Finished runs and what it takes to rebuild their model: the head, the info, and for a run that
    # trained the backbone its weights (kept for the best few only: a backbone can weigh 100 MB).
    results: list[dict[str, Any]] = []
    reasons: list[str] = []

    def keep(run: _Run, head: nn.Module, info: dict[str, Any], trained: bool, bb: Any) -> None:
        result = {"run": run, "head": head, "info": info, "trained": trained, "state": None}
        results.append(result)
        top = _contenders(results)[:max(config.cv_finalists, 1)]
        if any(r is result for r in top):  # copy the weights only of a run still in the running
            result["state"] = {k: v.detach().clone() for k, v in bb.state_dict().items()}
        for r in results:
            if r["trained"] and not any(r is t for t in top):
                r["state"] = None  # out of the running: its weights are not needed

    def left() -> float:
        return config.budget_s - (time.perf_counter() - start)

    if "pseudo-label" in candidates and inputs.pool is None:
        candidates.remove("pseudo-label")
        reasons.append("pseudo-label was not tried: it needs unlabelled items (--unlabelled).")

    # 1. the cheap candidates, always
    for name in [c for c in candidates if c in FEATURE_CANDIDATES]:
        entry = STRATEGIES.get(name)
        run = _Run(name, None, None, rung=0, n_val=n_val)
        t = time.perf_counter()
        head, info, trained = entry.run(backbone, quiet, entry.config_class())
        run.seconds = time.perf_counter() - t
        run.val_accuracy = _val_accuracy(backbone, head, info, inputs, trained)
        if info.get("used_pool") is False:
            run.note = "the pool lowered validation accuracy and was dropped: a probe without it"
        runs.append(run)
        log(f"auto: {_label(run)}: validation accuracy {run.val_accuracy:.3f} ({run.seconds:.1f} s)")
        keep(run, head, info, trained, backbone)
    probe = next((r for r in runs if r.strategy == "linear-probe"), None)

    # 2. the fine-tuning race
    tuning = [c for c in candidates if c not in FEATURE_CANDIDATES]
    smallest = int(np.bincount(inputs.labels["train"]).min()) if len(inputs.labels["train"]) else 0
    if tuning and not backbone.trainable:
        reasons.append(f"'{backbone.card.name}' cannot be trained here (an ONNX model, or one without gradients): "
                       "only the feature-based candidates were tried.")
        tuning = []
    elif tuning and smallest < config.min_per_class:
        reasons.append(f"The smallest class has {smallest} training examples (< {config.min_per_class}): too few to "
                       "tell fine-tuning runs apart on validation, so only the feature-based candidates were tried.")
        tuning = []
    if tuning and left() <= 0:
        reasons.append(f"The budget ({config.budget_s:g} s) was spent on the feature-based candidates: no "
                       "fine-tuning run was tried.")
        tuning = []
    original: dict[str, torch.Tensor] = {}
    chance = -1.0  # the commonest class's share of validation, once there are fine-tuning runs to judge
    per_item, slowdown = 0.0, [1.0]  # measured seconds / estimated seconds of the runs so far
    measured: dict[str, list[float]] = {}  # the same ratio, per strategy

    def time_factor(name: str) -> float:
        # A strategy that has run is timed by its own runs (SetFit's pairs make the generic estimate
        # err by 3x either way); one that has not, by the runs so far, never below 1.
        return float(np.median(measured[name])) if measured.get(name) else _scale(slowdown)

    # On a small validation split the folds decide (step 3): the last rung leaves them their time.
    tiny = 0 < n_val < config.cv_below
    n_pooled = len(inputs.labels["train"]) + n_val
    k_folds = _n_folds(config, np.concatenate([inputs.labels["train"], inputs.labels["val"]])) if n_val else 0
    if tuning:
        # Before anything runs the backbone in training mode (the timing below moves BatchNorm's
        # statistics): every run, and a feature-based winner, starts from these weights.
        original = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
        per_item = seconds_per_item(backbone, inputs)
        backbone.load_state_dict(original)
        # A run stopped at the deadline still embeds train + val and fits its head (SetFit) and is
        # scored: its own deadline comes that much earlier, so the search ends inside the budget.
        finish = run_seconds(per_item, 1, 0, 3 * (len(inputs.labels["train"]) + n_val)) + 2.0
        quiet = dataclasses.replace(quiet, runtime=quiet.runtime.with_(deadline=deadline - finish))
        n_train = len(inputs.splits.train)
        # a validation split of one class cannot tell a collapsed run from a perfect one: no chance bar
        chance = (float(np.bincount(inputs.labels["val"]).max() / n_val)
                  if n_val and len(np.unique(inputs.labels["val"])) > 1 else -1.0)
        # Each strategy's default learning rate first (factor closest to 1), then the others: under a
        # tight budget every strategy gets its most likely setting before any gets a second one.
        factors = sorted(config.lr_factors, key=lambda f: (abs(np.log(f)), f))
        order = sorted(tuning, key=_race_order)
        pool = [(name, f) for f in factors for name in order]
        excluded: dict[str, float] = {}  # strategy -> the smallest learning rate that collapsed
        full_length: set[str] = set()  # strategies whose first rung already ran at full length
        n_rungs = 2
        # The first rung's allowance, charged with the larger of the time it took and the time its
        # runs were estimated to take (a run that finished early does not hand its estimate back).
        race_start, first_rung_allowance, first_rung_planned = time.perf_counter(), config.first_rung_share * left(), 0.0
        for r in range(n_rungs):
            rung_done: list[tuple[_Run, tuple[str, float]]] = []
            for name, factor in pool:
                entry = STRATEGIES.get(name)
                final = _final_epochs(entry, config)
                epochs = min(config.first_rung_epochs, final) if r == 0 else final
                lr = float(f"{entry.config_class().lr * factor:.3g}")  # 6e-05, not 6.000000000000001e-05
                if r > 0 and epochs == min(config.first_rung_epochs, final):
                    continue  # its first-rung run already had the full length
                run = _Run(name, lr, epochs, rung=r, n_val=n_val)
                runs.append(run)
                if name in excluded and lr >= excluded[name]:
                    run.status, run.note = "skipped", f"lr >= {excluded[name]:g} collapsed or diverged"
                    continue
                estimate = run_seconds(per_item, epochs, n_train, n_val, _passes(entry.config_class()))
                run.estimate_s = estimate * time_factor(name)
                if run.estimate_s > left():
                    run.status, run.note = "over budget", f"needs ~{run.estimate_s:.0f} s, {max(left(), 0):.0f} s left"
                    continue
                if r > 0 and tiny and k_folds >= 2:
                    cheap_cost = k_folds * sum(x["run"].seconds for x in results if not x["trained"])
                    finalists = [x for x in _contenders(results) if x["state"] is not None][:config.cv_finalists]

                    def fold_need(fs: list[dict[str, Any]], longer: dict[str, int] | None = None) -> float:
                        return _fold_seconds(per_item, time_factor, k_folds, n_pooled, cheap_cost, fs, longer)

                    finalists = _affordable(finalists, fold_need, left)
                    if finalists and run.estimate_s + fold_need(finalists, {name: epochs}) > left():
                        run.status, run.note = "over budget", "the rest of the budget is kept for the folds"
                        continue
                # A run already at full length (SetFit's one epoch) has no later rung: its first learning
                # rate is always tried if the budget allows; the others are exploration like any short run.
                if r == 0 and (epochs < final or name in full_length):
                    used = max(time.perf_counter() - race_start, first_rung_planned)
                    if used + run.estimate_s > first_rung_allowance:
                        run.status, run.note = "over budget", "the first rung's share of the budget is spent"
                        continue
                    first_rung_planned += run.estimate_s
                if r == 0 and epochs == final:
                    full_length.add(name)
                backbone.load_state_dict(original)  # every run starts from the pre-trained weights
                t = time.perf_counter()
                try:
                    head, info, trained = entry.run(backbone, quiet, _config_for(entry, lr, epochs))
                except (HeadstartError, RuntimeError) as err:  # diverged in its first epoch; out of memory
                    _unwrap_adapters(backbone)
                    run.seconds = time.perf_counter() - t
                    run.status, run.note = ("diverged" if "diverged" in str(err) else "failed"), str(err).split(". ")[0]
                    if run.status == "diverged":
                        excluded[name] = min(excluded.get(name, lr), lr)
                    log(f"auto: {_label(run)}: {run.status} ({run.note})")
                    continue
                run.seconds = time.perf_counter() - t
                run.val_accuracy = _val_accuracy(backbone, head, info, inputs, trained)
                stopped = info.get("stopped_reason", "")
                if stopped == "out of time":
                    run.note = "stopped at the end of the budget, scored on what it had learnt"
                else:
                    slowdown.append(run.seconds / max(estimate, 1e-9))
                    measured.setdefault(name, []).append(run.seconds / max(estimate, 1e-9))
                if not np.isfinite(run.val_accuracy) or "diverged" in stopped:
                    stopped = "diverged"
                elif (run.val_accuracy <= chance + 1e-9 and stopped != "out of time"  # cut short, not collapsed
                      and epochs >= 2):  # after one epoch a run may not have left chance yet (loop's stop_at_chance)
                    stopped = "collapsed"  # no better than always answering the commonest class
                if stopped in ("collapsed", "diverged"):
                    run.status = stopped
                    run.note = ("the loss stopped being a number" if stopped == "diverged" else
                                "no better than the commonest class's share of validation") + \
                        "; this learning rate and larger ones are excluded"
                    excluded[name] = min(excluded.get(name, lr), lr)
                elif run.val_accuracy <= chance + 1e-9:  # cut short by the budget, or after one epoch
                    when = "at chance" if run.note else "at chance after one epoch"
                    run.note = "; ".join(filter(None, [run.note, f"{when}: it may still learn, but cannot win as it is"]))
                log(f"auto: {_label(run)}: "
                    + (f"validation accuracy {run.val_accuracy:.3f}" if run.status == "done" else run.status)
                    + f" ({run.seconds:.0f} s)")
                if run.status == "done":
                    rung_done.append((run, (name, factor)))
                    # A finished short run is a measured model too: it counts when the budget
                    # stops the longer rung (a longer run of the same setting replaces it if better).
                    keep(run, head, info, trained, backbone)
            if r < n_rungs - 1:  # successive halving: the best share goes on
                rung_done.sort(key=lambda x: -x[0].val_accuracy)
                pool = [c for _, c in rung_done[:max(1, int(np.ceil(len(rung_done) * config.keep)))]]
                if not pool:
                    break

    # 3. on a small validation split: the finalists on folds of train + val
    tuned = [r for r in _contenders(results) if r["state"] is not None]
    if 0 < n_val < config.cv_below and len([r for r in results if r["run"].status == "done"]) >= 2:
        reasons.extend(_cross_validate(backbone, quiet, config, [r for r in results if not r["trained"]], tuned,
                                       original, per_item, time_factor, left, log))
    if original:
        backbone.load_state_dict(original)

    finished = [r for r in results if r["run"].status == "done"]
    if not finished and not runs:  # nothing could even start: say why, not "raise the budget"
        raise ConfigError("auto had no candidate it could run. " + " ".join(reasons),
                          fix="choose candidates that suit the data and backbone (--option candidates=...), or leave "
                              "them out to let auto choose.")
    if not finished:
        raise ConfigError("auto could not finish any candidate within the budget.",
                          fix="raise --budget, or choose a strategy with --strategy linear-probe.")
    # A fine-tuning run no better than the commonest class's share never wins, however the others did.
    at_chance = [r for r in finished if r["trained"] and chance >= 0 and r["run"].val_accuracy <= chance + 1e-9]
    usable = [r for r in finished if (r["state"] is not None or not r["trained"]) and not any(r is c for c in at_chance)]
    if not usable:
        raise ConfigError("auto's fine-tuning runs all ended no better than always answering the commonest class "
                          f"({100 * chance:.0f}% of validation).",
                          fix="lower the learning rates (--option lr_factors=0.1,0.3), or let auto include the "
                              "linear probe (leave --option candidates out).")
    scored = [r for r in usable if r["run"].cv_n]
    # Ties go to the linear probe (the floor), then to the cheaper candidate.
    def rank(r: dict[str, Any], score: float) -> tuple[float, bool, float]:
        return score, r["run"].strategy == "linear-probe", -r["run"].seconds

    best = max(scored or usable, key=lambda r: rank(r, r["run"].score()[0]))
    unscored = [r for r in usable if r["trained"] and not r["run"].cv_n]
    if scored and unscored and not any(r["trained"] for r in scored):
        # No fine-tuning run had time for the folds: the best of them must beat every feature-based
        # candidate on the one score they all have, the validation split.
        challenger = max(unscored, key=lambda r: rank(r, r["run"].val_accuracy))
        bar = max(r["run"].val_accuracy for r in scored)
        if challenger["run"].val_accuracy > bar:
            reasons.append(f"The fine-tuning runs had no time left for the folds; the best of them, "
                           f"{_label(challenger['run'])}, beat the folds' winner ({_label(best['run'])}) on the "
                           f"validation split ({challenger['run'].val_accuracy:.3f} against the feature-based "
                           f"candidates' best, {bar:.3f}) and was kept.")
            best = challenger
        else:
            reasons.append(f"The fine-tuning runs had no time left for the folds; the best of them, "
                           f"{_label(challenger['run'])}, did not beat the feature-based candidates on the "
                           "validation split.")
    probe_result = next((r for r in usable if r["run"].strategy == "linear-probe"), None)
    if config.probe_within_se and probe_result is not None and best is not probe_result:
        # Breiman's one-standard-error rule, with the probe as the simplest model: a costlier candidate
        # replaces it only when it wins by more than the score's own noise (on 320 digits a 1.9-point
        # fold win of LP-FT turned into a 1.3-point loss on 1000 test digits).
        both_folds = bool(best["run"].cv_n and probe_result["run"].cv_n)
        s_best, n = best["run"].score() if both_folds else (best["run"].val_accuracy, best["run"].n_val)
        s_probe = probe_result["run"].score()[0] if both_folds else probe_result["run"].val_accuracy
        # Agresti-Coull's shrunk proportion: at a perfect score the plain p(1-p)/n would be 0, and a
        # 100% on 40 items is not exact
        shrunk = (s_best * n + 2) / (n + 4)
        se = float(np.sqrt(shrunk * (1 - shrunk) / max(n, 1)))
        if s_probe >= s_best - se:
            reasons.append(f"{_label(best['run'])} scored {s_best:.3f}, the linear probe {s_probe:.3f}: within one "
                           f"standard error ({se:.3f}) of each other, so the probe, the simplest and cheapest, is "
                           "kept (the one-standard-error rule).")
            best = probe_result
    win: _Run = best["run"]
    if best["trained"]:
        backbone.load_state_dict(best["state"])
    reasons.extend(_why(win, probe, runs, config.first_rung_share))
    spent = time.perf_counter() - start
    if spent > config.budget_s * 1.05:
        reasons.append(f"The search took {spent:.0f} s, over the {config.budget_s:g} s budget: the feature-based "
                       "candidates always run, and each run's cost is only an estimate.")
    log("auto: " + " ".join(reasons))
    info = {**best["info"], "chosen_strategy": win.strategy, "reasons": reasons,
            "search": [r.row() for r in runs], "search_seconds": round(time.perf_counter() - start, 1),
            "budget_s": config.budget_s}
    if win.lr is not None:
        info["chosen_lr"] = win.lr
    return best["head"], info, bool(best["trained"])


def _cross_validate(backbone: Any, quiet: StrategyInputs, config: AutoConfig, cheap: list[dict[str, Any]],
                    tuned: list[dict[str, Any]], original: dict[str, torch.Tensor], per_item: float,
                    factor: Any, left: Any, log: Any) -> list[str]:
    """Score the feature-based candidates and the best fine-tuning settings on the same stratified
    folds of train + val, repeated while the budget allows; returns what to tell the user."""
    from sklearn.model_selection import StratifiedGroupKFold

    pooled, feats, y, groups = _pooled(quiet)
    # the fold runs are a means to a score: their own epoch lines would read like new results
    silent = dataclasses.replace(quiet, runtime=quiet.runtime.with_(log=lambda message: None))
    k = _n_folds(config, y)
    n_val = len(quiet.labels["val"])
    if k < 2:
        return [f"The validation split has {n_val} items, but the smallest class has fewer than 2 labelled items: "
                "the candidates were compared on the validation split alone."]
    cheap_cost = k * sum(r["run"].seconds for r in cheap)  # measured: each refits once per fold

    def need(finalists: list[dict[str, Any]]) -> float:
        return _fold_seconds(per_item, factor, k, len(y), cheap_cost, finalists)

    # a tight budget: fewer fine-tuning settings on the folds, at worst none (the feature-based
    # candidates cost seconds there, and the fine-tuning runs keep their validation scores)
    finalists = _affordable(tuned[:config.cv_finalists], need, left)
    repeats = 0
    for rep in range(config.cv_repeats):
        if need(finalists) > left():
            break
        folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=quiet.seed + rep).split(
            feats, y, groups))
        for r in [*cheap, *finalists]:
            run: _Run = r["run"]
            entry = STRATEGIES.get(run.strategy)
            right, t = 0, time.perf_counter()
            for f, (fit_idx, score_idx) in enumerate(folds):
                train_idx, tune_idx = _inner_split(fit_idx, y, groups, quiet.seed + 100 * rep + f)
                fold = _fold_inputs(silent, pooled, feats, y, train_idx, tune_idx, score_idx)
                if r["trained"]:
                    backbone.load_state_dict(original)
                try:
                    head, info, trained = entry.run(backbone, fold, _config_for(entry, run.lr, run.epochs))
                except (HeadstartError, RuntimeError) as err:
                    _unwrap_adapters(backbone)
                    log(f"auto: {_label(run)} failed on a fold ({str(err).split('. ')[0]}); it scores 0 there")
                    continue
                acc = _held_out_accuracy(backbone, head, fold, trained)
                right += int(round((acc if np.isfinite(acc) else 0.0) * len(score_idx)))
            run.cv_right += right
            run.cv_n += len(y)
            run.cv_items = len(y)
            run.cv_seconds += time.perf_counter() - t
        repeats += 1
    if original:
        backbone.load_state_dict(original)
    if not repeats:
        for r in [*cheap, *finalists]:
            r["run"].cv_n = r["run"].cv_right = r["run"].cv_items = 0
        return [f"The validation split has {n_val} items (< {config.cv_below}); comparing on folds of train + val "
                "did not fit in what was left of the budget, so the validation split decided."]
    for r in [*cheap, *finalists]:
        log(f"auto: {_label(r['run'])}: {r['run'].cv_accuracy:.3f} on {k} folds x {repeats} of train + val")
    which = "the feature-based candidates" + (f" and the race's best {len(finalists)} fine-tuning setting(s)"
                                              if finalists else "")
    return [f"The validation split has only {n_val} items (< {config.cv_below}), so {which} were compared on {k} "
            f"stratified folds of train + val ({len(y)} items, {repeats} repetition(s)): every labelled item was "
            "scored, and all candidates saw the same folds."]


def _budget_words(seconds: float) -> str:
    """``--budget`` as a user would type it: whole seconds under two minutes, else whole minutes (rounded up)."""
    return f"{int(np.ceil(seconds))}s" if seconds < 120 else f"{int(np.ceil(seconds / 60))}m"


def _why(win: _Run, probe: _Run | None, runs: list[_Run], first_rung_share: float = 1.0) -> list[str]:
    finished = [r for r in runs if r.status == "done"]
    score, n = win.score()
    where = f"on folds of train + val ({n} items)" if win.cv_n else f"on the validation split ({n} items)"
    top = max((r.score()[0] for r in finished if bool(r.cv_n) == bool(win.cv_n) and np.isfinite(r.score()[0])),
              default=score)
    said = [f"Tried {len(finished)} candidate run(s); {_label(win)} scored best {where}: {score:.3f}."
            if score >= top else
            f"Tried {len(finished)} candidate run(s); the best scored {top:.3f} {where}, {_label(win)} "
            f"{score:.3f}."]
    trouble = [r for r in runs if r.status in ("collapsed", "diverged")]
    if trouble:
        said.append("Stopped early and excluded: " + "; ".join(f"{_label(r)} ({r.status})" for r in trouble) + ".")
    skipped = [r for r in runs if r.status == "over budget"]
    if skipped:
        cheapest = min(skipped, key=lambda r: r.estimate_s or float("inf"))
        spent = sum(r.seconds + r.cv_seconds for r in runs)
        need = spent + (cheapest.estimate_s or 0.0)
        if "first rung's share" in cheapest.note:  # the first rung may use only its share of a budget
            need /= first_rung_share
        said.append(f"{len(skipped)} run(s) did not fit in the budget; the cheapest of them, {_label(cheapest)}, "
                    f"needed about {cheapest.estimate_s:.0f} s more (a budget of about {_budget_words(need * 1.2)} "
                    "would have tried it; the estimate moves with the machine's load)."
                    if cheapest.estimate_s else f"{len(skipped)} run(s) did not fit in the budget.")
    if probe is None or probe.status != "done":
        return said
    p_score, p_n = probe.score() if bool(win.cv_n) == bool(probe.cv_n) else (probe.val_accuracy, probe.n_val)
    if win is not probe and score == p_score:
        said.append(f"{_label(win)} tied with the linear probe.")
    elif win is not probe:
        lo_w = wilson(score * n, n)[0]
        hi_p = wilson(p_score * p_n, p_n)[1]
        said.append(f"{_label(win)} beat the linear probe by {100 * (score - p_score):.1f} points"
                    + (", more than one standard error, though the 95% intervals overlap: a modest margin, "
                       "so expect the two to be close on new data." if lo_w <= hi_p else ", beyond the noise."))
    elif any(r.lr is not None for r in finished):
        said.append("The linear probe was kept: "
                    + ("no fine-tuning run beat it" + (" on the folds." if win.cv_n else " on validation.")
                       if score >= top else "what beat it did so by less than one standard error."))
    return said


register_strategy("auto", AutoConfig, run_auto, "try the strategies on validation within the time budget "
                  "(successive halving over strategies and learning rates; pseudo-labels with --unlabelled); keep "
                  "the best, say why", needs_features=True, pool="optional", trains="may")
