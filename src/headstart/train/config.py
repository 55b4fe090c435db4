"""``FineTuneConfig``: the training knobs every fine-tuning strategy's config extends."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class FineTuneConfig:
    """Training knobs shared by every fine-tuning strategy (each strategy's config extends it)."""

    epochs: int = 5
    lr: float = 5e-5  # backbone learning rate (of the top group, see layer_decay)
    head_lr: float = 1e-2  # a fresh head on pooled features needs a much larger rate than the backbone
    layer_decay: float = 1.0  # group i of n gets lr * layer_decay ** (n - 1 - i); 1.0 = the same rate everywhere
    weight_decay: float = 0.01
    batch_size: int = 16
    grad_accum: int = 1
    warmup: float = 0.1  # fraction of the optimizer steps
    schedule: str = "cosine"  # cosine | onecycle | constant
    clip_grad: float = 1.0
    label_smoothing: float = 0.1
    head_dropout: float = 0.1
    l2sp: float = 0.0  # L2-SP: pull the backbone towards the pre-trained weights instead of towards 0
    bss: float = 0.0  # Batch Spectral Shrinkage weight (Chen et al., 2019; they use 1e-3); 0 = off
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup, images only; 0 = off
    cutmix: float = 0.0
    augment: str = "crop"  # images: none | crop (random resized crop + colour jitter) | crop-flip
    patience: int = 3  # early stopping on validation accuracy (then loss)
    restore_best: bool = True  # end with the best validation epoch's weights (False: the last epoch's)
    freeze: int = 0  # freeze the first k parameter groups (input side)
    gradual: bool = False  # ULMFiT: unfreeze one more group from the top each epoch
    max_steps_per_epoch: int = 0  # 0 = whole epochs; a cap for quick runs and benchmarks

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"), ("head_lr", self.head_lr > 0, "> 0"),
                  ("layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("batch_size", self.batch_size >= 1, ">= 1"), ("grad_accum", self.grad_accum >= 1, ">= 1"),
                  ("warmup", 0 <= self.warmup < 1, "in [0, 1)"), ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("head_dropout", 0 <= self.head_dropout < 1, "in [0, 1)"), ("l2sp", self.l2sp >= 0, ">= 0"),
                  ("bss", self.bss >= 0, ">= 0"),
                  ("mixup", self.mixup >= 0, ">= 0"), ("cutmix", self.cutmix >= 0, ">= 0"),
                  ("patience", self.patience >= 1, ">= 1"), ("freeze", self.freeze >= 0, ">= 0"),
                  ("schedule", self.schedule in ("cosine", "onecycle", "constant"), "cosine, onecycle or constant"),
                  ("augment", self.augment in ("none", "crop", "crop-flip"), "none, crop or crop-flip")]
        for name, ok, wanted in checks:
            if not ok:
                raise ConfigError(f"`{name}` must be {wanted}, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
