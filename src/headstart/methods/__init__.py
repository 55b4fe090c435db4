"""Strategies, one module each; every module registers its own strategy when it is imported.

The contract (:class:`StrategyInputs`, :class:`Strategy`, :data:`STRATEGIES`,
:func:`register_strategy`) lives in :mod:`.base`; importing this package imports every method
module, in the order their names are listed to users.
"""

from __future__ import annotations

from typing import Any

from ..options import parse_options
from .base import STRATEGIES, Strategy, StrategyInputs, register_strategy

# Imported for their registration; the order is the order of `STRATEGIES.names()`.
from . import linear_probe, finetune, lora, domain_adapt, zero_shot, prototypes, setfit, pseudo_label, auto  # noqa: E402, F401, I001


def make_config(strategy: str, **options: Any) -> Any:
    """The strategy's config from keyword options, each parsed by the config's annotation (text
    such as ``"0.1,1"`` or ``"true"`` too); unknown names and wrong types are errors, not ignored."""
    entry = STRATEGIES.get(strategy)
    return entry.config_class(**parse_options(entry.config_class, options, strategy=strategy))


__all__ = ["STRATEGIES", "Strategy", "StrategyInputs", "make_config", "register_strategy"]
