"""What the faithfulness benchmark measured, and the default method that follows from it.

``CASES`` holds, for every case ``bench/explain_faithfulness.py`` measured (its part of
``bench/results/explain_faithfulness/results.json``), the curves on which each method beat a random
order by more than the spread over 3 seeds. The table is copied from the committed results, and
``tests/test_explain.py`` checks it against them; docs/benchmarks.md shows the numbers.

The rule the defaults follow:

- A method is *verified* for a modality when it beat random on both curves in every measured case
  of that modality.
- The default for a modality is the cheapest verified method (the registry lists methods from the
  cheapest); where none is verified, the one that beat random on the most curves, and every
  explanation by an unverified method carries a note that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

CURVES = {"image": ("deletion", "insertion"), "text": ("comprehensiveness", "sufficiency")}


@dataclass(frozen=True)
class Case:
    part: str                             # its key in results.json
    modality: str
    what: str                             # the kind of data, as a note names it
    beat_random_on: dict[str, tuple[str, ...]]  # method -> the curves on which it beat random

    def verified(self, method: str) -> bool:
        return set(CURVES[self.modality]) <= set(self.beat_random_on.get(method, ()))


CASES: tuple[Case, ...] = (
    Case("mnist", "image", "MNIST digits at 224 px",
         {"grad-cam": ("insertion",), "integrated-gradients": ("deletion",),
          "occlusion": ("deletion", "insertion"), "kernel-shap": ("deletion", "insertion")}),
    Case("mnist_small", "image", "MNIST digits at 64 px",
         {"grad-cam": ("deletion", "insertion"), "integrated-gradients": ("deletion", "insertion"),
          "occlusion": ("deletion", "insertion"), "kernel-shap": ("deletion", "insertion")}),
    Case("photos", "image", "photos at 224 px",
         {"grad-cam": ("deletion", "insertion"), "integrated-gradients": ("deletion",),
          "occlusion": ("deletion", "insertion"), "kernel-shap": ("insertion",)}),
    Case("bbc", "text", "BBC News articles at 64 tokens",
         {"integrated-gradients": ("comprehensiveness", "sufficiency"),
          "kernel-shap": ("comprehensiveness", "sufficiency")}),
    Case("bbc_256", "text", "BBC News articles at 256 tokens",
         {"integrated-gradients": ("comprehensiveness", "sufficiency"),
          "kernel-shap": ("comprehensiveness", "sufficiency")}),
)


def cases(modality: str) -> list[Case]:
    return [c for c in CASES if c.modality == modality]


def verified(method: str, modality: str) -> bool:
    """Whether ``method`` beat random on both curves in every measured case of ``modality``."""
    found = cases(modality)
    return bool(found) and all(c.verified(method) for c in found)


def wins(method: str, modality: str) -> int:
    """On how many curves of the measured cases ``method`` beat random."""
    return sum(len(c.beat_random_on.get(method, ())) for c in cases(modality))


def preferred(methods: list[str], modality: str) -> str | None:
    """Among ``methods`` (cheapest first), the default: the first verified one, else the one that
    beat random on the most curves (the cheaper on a tie)."""
    if not methods:
        return None
    good = [m for m in methods if verified(m, modality)]
    return good[0] if good else max(methods, key=lambda m: (wins(m, modality), -methods.index(m)))


def note(method: str, modality: str, alternatives: list[str] | None = None) -> str:
    """A sentence for the reader when ``method``'s maps are not verified faithful on ``modality``
    data ("" when they are), naming the closest option among ``alternatives`` (default: every
    registered method for the modality)."""
    if verified(method, modality):
        return ""
    failed = [c for c in cases(modality) if not c.verified(method)]
    if not failed:
        return (f"These {modality} explanations are not verified faithful: no {modality} data was measured "
                "in the faithfulness benchmark.")
    where = "; ".join(f"{c.what} (" + (f"only on {' and '.join(c.beat_random_on[method])}"
                                        if c.beat_random_on.get(method) else "on neither") + ")" for c in failed)
    passed = [c.what for c in cases(modality) if c.verified(method)]
    text = (f"Not verified faithful for all the {modality} data measured: in the faithfulness benchmark, {method} "
            f"did not beat a random order on both curves for {where}"
            + (f"; it did for {' and '.join(passed)}" if passed else "")
            + ". Read these explanations as hints, not as measured evidence.")
    if alternatives is None:
        from .base import EXPLAINERS

        alternatives = [n for n in EXPLAINERS if modality in EXPLAINERS.get(n).modalities]
    others = [m for m in alternatives if m != method]
    better = [m for m in others if verified(m, modality)]
    if better:
        return text + f" {better[0]} was verified; explain with it where the model supports it."
    closest = preferred(others, modality)
    if closest is not None and wins(closest, modality) > wins(method, modality):
        return text + f" The closest option is {closest} (it beat random on more of the curves)."
    return text
