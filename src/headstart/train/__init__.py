"""The one training loop shared by every fine-tuning strategy."""

from .loop import FineTuneConfig, TrainResult, train

__all__ = ["FineTuneConfig", "TrainResult", "train"]
