"""``auto``: try the strategies on the validation split within a time budget, keep the best, say why.

The search, in order:

1. The cheap candidates on cached features (the linear probe, class prototypes) always run: they
   take seconds, and the probe is the floor the result is measured against.
2. The fine-tuning candidates (LP-FT, LoRA when the backbone has attention projections, full,
   partial, SetFit for text; in that order, each at its default learning rate before any at
   another of ``lr_factors``) enter a successive-halving race (Jamieson & Talwalkar 2016; AutoGluon and
   Optuna's pruners work the same way): a short first rung for every candidate, then the best
   third continue at full length. Each run's cost is estimated from timed forward + backward
   batches on real training items before it starts; a run that would not fit in what is left of
   the budget is skipped and reported as such.
3. A run whose loss stops being a number (diverged) or whose validation accuracy is no better
   than always answering the commonest class (collapsed) is stopped early by the training loop,
   reported, and its learning rate and every larger one of that strategy are excluded.
4. The winner has the best validation accuracy; a fine-tuning run replaces the probe only if it
   beats it, and the card says whether the margin is inside the validation split's noise (the
   Wilson 95% intervals of the two scores overlap).

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

FEATURE_CANDIDATES = ("linear-probe", "prototypes")
# In the order they enter the race, most promising per second first: LP-FT (Kumar et al. 2022)
# keeps the probed head and rarely loses to it; LoRA trains a fraction of the weights; then full and
# partial fine-tuning, then SetFit. A tight budget runs the first few.
FINETUNE_CANDIDATES = ("lp-ft", "lora", "full", "partial", "setfit")


@dataclass(frozen=True)
class AutoConfig(Config):
    budget_s: float = 600.0
    candidates: tuple[str, ...] = ()
    lr_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    epochs: int = 4
    first_rung_epochs: int = 1
    keep: float = 1 / 3
    min_per_class: int = 4
    type: str = field(default="auto", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "budget_s": Interval(0, low_open=True), "lr_factors": Each(Interval(0, low_open=True), non_empty=True),
        "epochs": Interval(1), "first_rung_epochs": Interval(1), "keep": Interval(0, 1, low_open=True),
        "min_per_class": Interval(1)}
    notes: ClassVar[dict[str, str]] = {
        "budget_s": "seconds the search may take (--budget 10m)",
        "candidates": "strategies to try; empty = the probe, prototypes and every fine-tuning strategy "
                      "that suits the backbone and the data",
        "lr_factors": "each fine-tuning candidate's default learning rate times these",
        "epochs": "epochs of a fine-tuning candidate in the last rung",
        "first_rung_epochs": "epochs of every fine-tuning candidate in the first rung",
        "keep": "share of the first rung's candidates that go on to the last",
        "min_per_class": "below this many examples in the smallest class, fine-tuning is not tried"}

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [c for c in self.candidates if c not in STRATEGIES or c in ("auto", "domain-adapt", "zero-shot")]
        if unknown:
            choices = [n for n in STRATEGIES.names() if n not in ("auto", "domain-adapt", "zero-shot")]
            raise ConfigError(f"`candidates` has {', '.join(map(repr, unknown))}, which auto cannot try.",
                              fix=f"choose among: {', '.join(choices)}.")


def parse_budget(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    try:
        return float(raw[:-1]) * units[raw[-1]] if raw[-1] in units else float(raw)
    except (ValueError, IndexError):
        raise ConfigError(f"--budget must look like 90s, 10m or 1h, got {text!r}.") from None


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


def run_seconds(per_item: float, epochs: int, n_train: int, n_val: int) -> float:
    """Training items every epoch, plus a forward-only pass (about a third of the cost) over validation."""
    return per_item * epochs * (n_train + n_val / 3)


def _default_candidates(backbone: Any, inputs: StrategyInputs) -> list[str]:
    from .lora import lora_targets

    names = list(FEATURE_CANDIDATES)
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
    y = inputs.labels["val"]
    if not len(y):
        return float("nan")
    feats = (extract_features(backbone, inputs.splits.val, use_cache=False, progress=False, device=inputs.device)
             if trained else inputs.features["val"])
    with torch.no_grad():
        pred = head.eval()(torch.as_tensor(feats, dtype=torch.float32)).argmax(1).numpy()
    return float((pred == y).mean())


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
    status: str = "done"  # done | collapsed | diverged | over budget | failed
    note: str = ""

    def row(self) -> dict[str, Any]:
        ci = wilson(self.val_accuracy * self.n_val, self.n_val) if self.n_val and np.isfinite(self.val_accuracy) else None
        return {"strategy": self.strategy, "lr": self.lr, "epochs": self.epochs, "rung": self.rung,
                "val_accuracy": None if not np.isfinite(self.val_accuracy) else self.val_accuracy,
                "ci95": ci, "seconds": round(self.seconds, 2),
                "estimate_s": None if self.estimate_s is None else round(self.estimate_s, 1),
                "status": self.status, "note": self.note}


def _label(run: _Run) -> str:
    return run.strategy + (f" lr={run.lr:g}" if run.lr is not None else "") + (
        f", {run.epochs} epoch(s)" if run.epochs is not None else "")


def run_auto(backbone: Any, inputs: StrategyInputs, config: AutoConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    start = time.perf_counter()
    log = inputs.log
    # The estimates come from a timing on a few batches; on a busy machine a run can take longer than
    # that said, so every run also stops at the budget's end and is scored on what it learnt by then.
    deadline = time.monotonic() + config.budget_s
    quiet = dataclasses.replace(inputs, runtime=inputs.runtime.with_(progress=False, deadline=deadline),
                                checkpoint_dir=None, resume=False)
    n_val = len(inputs.labels["val"])
    candidates = list(config.candidates) or _default_candidates(backbone, inputs)
    runs: list[_Run] = []
    best: dict[str, Any] | None = None  # the best finished run's run, head, info, trained, backbone state
    reasons: list[str] = []

    def consider(run: _Run, head: nn.Module, info: dict[str, Any], trained: bool, bb: Any) -> None:
        nonlocal best
        if run.status != "done":
            return
        key = (run.val_accuracy, -run.seconds)  # ties go to the cheaper candidate
        if best is None or key > best["key"]:
            best = {"key": key, "run": run, "head": head, "info": info, "trained": trained,
                    "state": {k: v.detach().clone() for k, v in bb.state_dict().items()} if trained else None}

    # 1. the cheap candidates, always
    for name in [c for c in candidates if c in FEATURE_CANDIDATES]:
        entry = STRATEGIES.get(name)
        run = _Run(name, None, None, rung=0, n_val=n_val)
        t = time.perf_counter()
        head, info, trained = entry.run(backbone, quiet, entry.config_class())
        run.seconds = time.perf_counter() - t
        run.val_accuracy = _val_accuracy(backbone, head, info, inputs, trained)
        runs.append(run)
        log(f"auto: {_label(run)}: validation accuracy {run.val_accuracy:.3f} ({run.seconds:.1f} s)")
        consider(run, head, info, trained, backbone)
    probe = next((r for r in runs if r.strategy == "linear-probe"), None)

    # 2. the fine-tuning race
    tuning = [c for c in candidates if c not in FEATURE_CANDIDATES]
    smallest = int(np.bincount(inputs.labels["train"]).min()) if len(inputs.labels["train"]) else 0
    if tuning and not backbone.trainable:
        reasons.append(f"'{backbone.card.name}' is an ONNX model and cannot be trained: only the feature-based "
                       "candidates were tried.")
        tuning = []
    elif tuning and smallest < config.min_per_class:
        reasons.append(f"The smallest class has {smallest} training examples (< {config.min_per_class}): too few to "
                       "tell fine-tuning runs apart on validation, so only the feature-based candidates were tried.")
        tuning = []
    left = config.budget_s - (time.perf_counter() - start)
    if tuning and left <= 0:
        reasons.append(f"The budget ({config.budget_s:g} s) was spent on the feature-based candidates: no "
                       "fine-tuning run was tried.")
        tuning = []
    if tuning:
        # Before anything runs the backbone in training mode (the timing below moves BatchNorm's
        # statistics): every run, and a feature-based winner, starts from these weights.
        original = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
        per_item = seconds_per_item(backbone, inputs)
        backbone.load_state_dict(original)
        n_train = len(inputs.splits.train)
        chance = float(np.bincount(inputs.labels["val"]).max() / n_val) if n_val else 0.0
        # Each strategy's default learning rate first (factor closest to 1), then the others: under a
        # tight budget every strategy gets its most likely setting before any gets a second one.
        factors = sorted(config.lr_factors, key=lambda f: (abs(np.log(f)), f))
        order = sorted(tuning, key=lambda n: FINETUNE_CANDIDATES.index(n) if n in FINETUNE_CANDIDATES else 99)
        pool = [(name, f) for f in factors for name in order]
        excluded: dict[str, float] = {}  # strategy -> the smallest learning rate that collapsed
        first = min(config.first_rung_epochs, config.epochs)
        rungs = [first, config.epochs] if first < config.epochs else [config.epochs]
        for r, epochs in enumerate(rungs):
            results: list[tuple[_Run, tuple[str, float]]] = []
            for name, factor in pool:
                entry = STRATEGIES.get(name)
                default = entry.config_class()
                lr = default.lr * factor
                run = _Run(name, lr, epochs, rung=r, n_val=n_val)
                runs.append(run)
                if name in excluded and lr >= excluded[name]:
                    run.status, run.note = "skipped", f"lr >= {excluded[name]:g} collapsed or diverged"
                    continue
                run.estimate_s = run_seconds(per_item, epochs, n_train, n_val)
                left = config.budget_s - (time.perf_counter() - start)
                if run.estimate_s > left:
                    run.status, run.note = "over budget", f"needs ~{run.estimate_s:.0f} s, {max(left, 0):.0f} s left"
                    continue
                # stop_at_chance: a run still at chance after two epochs has collapsed (loop.train)
                cfg = dataclasses.replace(default, lr=lr, epochs=epochs, stop_at_chance=2) if hasattr(
                    default, "stop_at_chance") else dataclasses.replace(default, lr=lr, epochs=epochs)
                backbone.load_state_dict(original)  # every run starts from the pre-trained weights
                t = time.perf_counter()
                try:
                    head, info, trained = entry.run(backbone, quiet, cfg)
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
                if not np.isfinite(run.val_accuracy):
                    stopped = "diverged"
                elif run.val_accuracy <= chance + 1e-9 and stopped != "out of time":  # cut short, not collapsed
                    stopped = "collapsed"  # no better than always answering the commonest class
                if stopped in ("collapsed", "diverged"):
                    run.status = stopped
                    run.note = ("no better than the commonest class's share of validation; this learning rate and "
                                "larger ones are excluded")
                    excluded[name] = min(excluded.get(name, lr), lr)
                log(f"auto: {_label(run)}: "
                    + (f"validation accuracy {run.val_accuracy:.3f}" if run.status == "done" else run.status)
                    + f" ({run.seconds:.0f} s)")
                if run.status == "done":
                    results.append((run, (name, factor)))
                    # A finished short run is a measured model too: it counts when the budget
                    # stops the longer rung (a longer run of the same setting replaces it if better).
                    consider(run, head, info, trained, backbone)
            if r < len(rungs) - 1:  # successive halving: the best share goes on
                results.sort(key=lambda x: -x[0].val_accuracy)
                pool = [c for _, c in results[:max(1, int(np.ceil(len(results) * config.keep)))]]
                if not pool:
                    break
        backbone.load_state_dict(original)

    if best is None:
        raise ConfigError("auto could not finish any candidate within the budget.",
                          fix="raise --budget, or choose a strategy with --strategy linear-probe.")
    win: _Run = best["run"]
    if best["trained"]:
        backbone.load_state_dict(best["state"])
    reasons.extend(_why(win, probe, runs))
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


def _budget_words(seconds: float) -> str:
    """``--budget`` as a user would type it: whole seconds under two minutes, else whole minutes (rounded up)."""
    return f"{int(np.ceil(seconds))}s" if seconds < 120 else f"{int(np.ceil(seconds / 60))}m"


def _why(win: _Run, probe: _Run | None, runs: list[_Run]) -> list[str]:
    finished = [r for r in runs if r.status == "done"]
    said = [f"Tried {len(finished)} candidate run(s) on the validation split ({win.n_val} items); "
            f"{_label(win)} scored best: {win.val_accuracy:.3f}."]
    trouble = [r for r in runs if r.status in ("collapsed", "diverged")]
    if trouble:
        said.append("Stopped early and excluded: " + "; ".join(f"{_label(r)} ({r.status})" for r in trouble) + ".")
    skipped = [r for r in runs if r.status == "over budget"]
    if skipped:
        cheapest = min(skipped, key=lambda r: r.estimate_s or float("inf"))
        spent = sum(r.seconds for r in runs)
        need = spent + (cheapest.estimate_s or 0.0)
        said.append(f"{len(skipped)} run(s) did not fit in the budget; the cheapest of them, {_label(cheapest)}, "
                    f"needed about {cheapest.estimate_s:.0f} s more (a budget of about {_budget_words(need * 1.2)} "
                    "would have tried it; the estimate moves with the machine's load)."
                    if cheapest.estimate_s else f"{len(skipped)} run(s) did not fit in the budget.")
    if probe is not None and win is not probe and probe.status == "done" and win.val_accuracy == probe.val_accuracy:
        said.append(f"{_label(win)} tied with the linear probe on validation; the cheaper of the two was kept.")
    elif probe is not None and win is not probe and probe.status == "done":
        lo_w = wilson(win.val_accuracy * win.n_val, win.n_val)[0]
        hi_p = wilson(probe.val_accuracy * probe.n_val, probe.n_val)[1]
        margin = win.val_accuracy - probe.val_accuracy
        said.append(f"{_label(win)} beat the linear probe by {100 * margin:.1f} points on validation"
                    + (", inside the split's noise (the 95% intervals overlap): treat the two as close."
                       if lo_w <= hi_p else ", beyond the split's noise."))
    elif probe is not None and win is probe and any(r.lr is not None for r in finished):
        said.append("The linear probe was kept: no fine-tuning run beat it on validation.")
    return said


register_strategy("auto", AutoConfig, run_auto, "try the strategies on validation within the time budget "
                  "(successive halving over strategies and learning rates); keep the best, say why",
                  needs_features=True)
