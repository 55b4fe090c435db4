"""``Runtime``: where and how work runs (device, feature cache, batch size, progress, log), as
opposed to what is learnt (a strategy's config) and from what (the data and the backbone).

Every workflow takes one ``Runtime`` instead of six keyword arguments passed down each layer; the
strategies read it from their inputs. Changing it never changes a result beyond floating-point
noise: the same config on the same data gives the same model on any device, with or without the
cache, at any batch size. The one exception is ``deadline``, a time limit: a run that reaches it
stops early, so it learns less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["Runtime"]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


@dataclass(frozen=True)
class Runtime:
    """``device``: None picks a GPU when there is one, else the CPU ("cpu", "cuda:1", a torch.device).
    ``cache_dir``: the feature cache (None: $HEADSTART_CACHE or ~/.cache/headstart); ``use_cache``
    off neither reads nor writes it. ``batch_size``: items per forward pass when extracting features.
    ``progress``: progress bars on the terminal. ``log``: where one-line messages for the user go.
    ``deadline``: a ``time.monotonic()`` value; training that reaches it stops at the next step and
    keeps what it has (``auto`` sets it, so that its search ends within the budget)."""

    device: Any = None
    cache_dir: str | Path | None = None
    use_cache: bool = True
    batch_size: int = 64
    progress: bool = True
    log: Callable[[str], None] = field(default=_quiet, compare=False)
    deadline: float | None = None

    def with_(self, **changes: Any) -> Runtime:
        """A copy with some settings changed (``rt.with_(progress=False)``)."""
        return replace(self, **changes)

    def extraction(self) -> dict[str, Any]:
        """The keyword arguments of feature extraction (:func:`headstart.features.extract_features_many`)."""
        return {"cache_dir": self.cache_dir, "use_cache": self.use_cache, "batch_size": self.batch_size,
                "device": self.device, "progress": self.progress}
