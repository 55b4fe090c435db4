"""Data-centric checks on frozen features: label issues, near-duplicates, outliers, slices, what to label next.

Pure NumPy functions with no I/O, one module each: :mod:`.probe` (out-of-fold probabilities from a
K-fold linear probe), :mod:`.label_issues` (confident learning through cleanlab), :mod:`.duplicates`,
:mod:`.outliers`, :mod:`.slices` (metrics per group, parity gaps) and :mod:`.selection` (the
``SELECTORS`` registry of active-learning strategies). :mod:`headstart.workflows.quality` runs them on
data sets through the feature cache.
"""

from .duplicates import DEFAULT_THRESHOLDS, Pair, near_duplicates
from .label_issues import DEFAULT_FILTER, FILTERS, WARN_SHARE, LabelIssues, find_label_issues, screen_labels
from .outliers import OUTLIER_Z, outlier_scores, robust_z
from .probe import out_of_fold_proba
from .selection import DEFAULT_SELECTOR, SELECTORS, Selector, select
from .slices import check_groups, demographic_parity_difference, equalized_odds_difference, slice_metrics

__all__ = ["DEFAULT_FILTER", "DEFAULT_SELECTOR", "DEFAULT_THRESHOLDS", "FILTERS", "LabelIssues", "OUTLIER_Z", "Pair",
           "SELECTORS", "Selector", "check_groups", "demographic_parity_difference", "equalized_odds_difference",
           "find_label_issues", "near_duplicates", "screen_labels", "WARN_SHARE", "out_of_fold_proba", "outlier_scores", "robust_z", "select",
           "slice_metrics"]
