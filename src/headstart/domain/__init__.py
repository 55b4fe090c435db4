"""Domain adaptation: measure the gap between source and target, align them, guard against
negative transfer. See :mod:`.gap`, :mod:`.losses`, :mod:`.validators` and :mod:`.adapt`."""

from .adapt import AdaptConfig, DomainResult, adapt_domain, check_domains
from .gap import measure_gap, mmd_test, plot_projection, proxy_a_distance
from .losses import ALIGNERS, Aligner, build_aligner
from .validators import VALIDATORS, validator_readings

__all__ = ["ALIGNERS", "VALIDATORS", "AdaptConfig", "Aligner", "DomainResult", "adapt_domain", "build_aligner",
           "check_domains", "measure_gap", "mmd_test", "plot_projection", "proxy_a_distance", "validator_readings"]
