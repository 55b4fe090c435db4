"""The domain-adaptation config (kept apart so the strategy registry can import it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..train.config import FineTuneConfig
from .losses import ALIGNERS
from .validators import VALIDATORS

SOURCE_ONLY = "source-only"


@dataclass(frozen=True)
class AdaptConfig(FineTuneConfig):
    method: str = "auto"  # source-only | dann | cdan | coral | mmd | mcc | auto
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
    type: str = field(default="domain-adapt", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        methods = (SOURCE_ONLY, "auto", *ALIGNERS.names())
        if self.method not in methods:
            raise ConfigError(f"Unknown adaptation method {self.method!r}.", fix=f"use one of: {', '.join(methods)}.")
        if self.mode not in ("features", "finetune"):
            raise ConfigError(f"`mode` must be 'features' or 'finetune', got {self.mode!r}.")
        if self.validator not in VALIDATORS:
            raise ConfigError(f"Unknown validator {self.validator!r}.", fix=f"use one of: {', '.join(VALIDATORS.names())}.")
        if self.seeds < 1:
            raise ConfigError(f"`seeds` must be >= 1, got {self.seeds}.")
        if self.trade_off < 0:
            raise ConfigError(f"`trade_off` must be >= 0, got {self.trade_off}.")
