"""``FineTuneConfig``: the training knobs every fine-tuning strategy's config extends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..options import Config, Constraint, Interval, OneOf


@dataclass(frozen=True)
class FineTuneConfig(Config):
    """Training knobs shared by every fine-tuning strategy (each strategy's config extends it)."""

    epochs: int = 5
    lr: float = 5e-5
    head_lr: float = 1e-2
    layer_decay: float = 1.0
    weight_decay: float = 0.01
    batch_size: int = 16
    grad_accum: int = 1
    warmup: float = 0.1
    schedule: str = "cosine"
    clip_grad: float = 1.0
    label_smoothing: float = 0.1
    head_dropout: float = 0.1
    l2sp: float = 0.0
    bss: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    augment: str = "crop"
    patience: int = 3
    restore_best: bool = True
    freeze: int = 0
    gradual: bool = False
    max_steps_per_epoch: int = 0
    stop_at_chance: int = 0

    constraints: ClassVar[dict[str, Constraint]] = {
        "epochs": Interval(1), "lr": Interval(0, low_open=True), "head_lr": Interval(0, low_open=True),
        "layer_decay": Interval(0, 1, low_open=True), "weight_decay": Interval(0), "batch_size": Interval(1),
        "grad_accum": Interval(1), "warmup": Interval(0, 1, high_open=True),
        "schedule": OneOf(("cosine", "onecycle", "constant")), "clip_grad": Interval(0),
        "label_smoothing": Interval(0, 1, high_open=True), "head_dropout": Interval(0, 1, high_open=True),
        "l2sp": Interval(0), "bss": Interval(0), "mixup": Interval(0), "cutmix": Interval(0),
        "augment": OneOf(("none", "crop", "crop-flip")), "patience": Interval(1), "freeze": Interval(0),
        "max_steps_per_epoch": Interval(0), "stop_at_chance": Interval(0),
    }
    notes: ClassVar[dict[str, str]] = {
        "lr": "backbone learning rate (of the top group, see layer_decay)",
        "head_lr": "a fresh head on pooled features needs a much larger rate than the backbone",
        "layer_decay": "group i of n gets lr * layer_decay ** (n - 1 - i); 1 = the same rate everywhere",
        "warmup": "fraction of the optimizer steps",
        "clip_grad": "largest gradient norm; 0 = no clipping",
        "l2sp": "L2-SP: pull the backbone towards the pre-trained weights instead of towards 0",
        "bss": "Batch Spectral Shrinkage weight (Chen et al. 2019 use 1e-3); 0 = off",
        "mixup": "Beta(alpha, alpha) of mixup, images only; 0 = off",
        "cutmix": "Beta(alpha, alpha) of CutMix, images only; 0 = off",
        "augment": "images: random resized crop + colour jitter (crop), plus flips (crop-flip)",
        "patience": "epochs without a better validation score before stopping",
        "restore_best": "end with the best validation epoch's weights (false: the last epoch's)",
        "freeze": "freeze the first k parameter groups (input side)",
        "gradual": "ULMFiT: unfreeze one more group from the top each epoch",
        "max_steps_per_epoch": "0 = whole epochs; a cap for quick runs and benchmarks",
        "stop_at_chance": "stop a run whose validation accuracy is no better than always answering the "
                          "commonest class after this many epochs (a collapse); 0 = off",
    }
