"""The one training loop shared by every fine-tuning strategy."""

from .config import FineTuneConfig
from .loop import TrainResult, train

__all__ = ["FineTuneConfig", "TrainResult", "train"]
