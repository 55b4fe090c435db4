"""Validation before any model work: a report of findings, each naming the culprits and the fix.

Hard problems (``error``) stop ``fit``; soft ones (``warning``) are shown and recorded. Nothing
is dropped silently: what a reader skipped is listed here too.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from ..errors import DataError
from .dataset import SPLITS, Dataset

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str
    where: tuple[str, ...] = ()
    fix: str = ""

    def line(self, limit: int = 5) -> str:
        shown = ", ".join(self.where[:limit]) + (f" and {len(self.where) - limit} more" if len(self.where) > limit else "")
        text = self.message + (f" [{shown}]" if shown else "")
        return text + (f" Fix: {self.fix}" if self.fix else "")


@dataclass
class Report:
    source: str
    n_items: int
    modality: str
    class_counts: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            first = self.errors[0]
            more = f" ({len(self.errors) - 1} more problem(s): run `headstart check` for the full list)" if len(self.errors) > 1 else ""
            raise DataError(f"{self.source}: {first.line()}{more}")

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "n_items": self.n_items, "modality": self.modality,
                "class_counts": self.class_counts,
                "findings": [{"level": f.level, "code": f.code, "message": f.message, "where": list(f.where),
                              "fix": f.fix} for f in self.findings]}


def validate(data: Dataset, *, test: Dataset | None = None, require_labels: bool = True,
             min_per_class: int = 2, few_per_class: int = 10, imbalance_ratio: float = 10.0) -> Report:
    """Check ``data`` (and an optional separate ``test`` set) and return a :class:`Report`."""
    report = Report(data.source, len(data), data.modality, dict(sorted(data.class_counts().items())))
    add = report.findings.append

    if data.skipped:
        add(Finding("warning", "skipped", f"{len(data.skipped)} file(s) or folder(s) were left out",
                    tuple(f"{s.where} ({s.reason})" for s in data.skipped),
                    "remove them, or move images into a class folder, if they were meant to be used."))
    for note in data.notes:
        add(Finding("warning", note.code, note.message, note.where, note.fix))

    if data.modality == "image":
        _check_images(data, add)
    else:
        empty = tuple(data.ids[i] for i, t in enumerate(data.items) if not str(t).strip())
        if empty:
            add(Finding("error", "empty-text", f"{len(empty)} empty or whitespace-only text(s)", empty,
                        "fill in the text or remove these rows."))

    if data.labels is None:
        if require_labels:
            add(Finding("error", "no-labels", "The data has no labels.",
                        fix="give a label column (tables) or one sub-folder per class (images)."))
    else:
        _check_labels(data, add, min_per_class, few_per_class, imbalance_ratio)
        _check_label_spelling(data, add)
    _check_duplicates(data, add)
    if data.splits is not None:
        present = set(data.splits)
        parts = {s: [i for i, v in enumerate(data.splits) if v == s] for s in SPLITS if s in present}
        _check_between(data, parts, add)
    if test is not None:
        joined = Dataset(data.modality, data.items + test.items,
                         (data.labels or []) + (test.labels or []) if data.labels and test.labels else None,
                         data.ids + [f"test: {i}" for i in test.ids], source=data.source)
        n = len(data)
        _check_between(joined, {"train": list(range(n)), "test": list(range(n, n + len(test)))}, add)
    return report


def _check_images(data: Dataset, add) -> None:  # type: ignore[no-untyped-def]
    bad: list[str] = []
    modes: Counter[str] = Counter()
    tiny: list[str] = []
    for i, item in enumerate(data.items):
        if not isinstance(item, str):
            modes["array"] += 1
            continue
        try:
            with Image.open(item) as img:
                img.load()  # full decode: verify() misses truncated files
                modes[img.mode] += 1
                if min(img.size) < 8:
                    tiny.append(data.ids[i])
        except Exception as exc:
            bad.append(f"{data.ids[i]} ({type(exc).__name__})")
    if bad:
        add(Finding("error", "corrupt-image", f"{len(bad)} image(s) cannot be decoded", tuple(bad),
                    "delete or re-export these files."))
    if tiny:
        add(Finding("warning", "tiny-image", f"{len(tiny)} image(s) smaller than 8 px", tuple(tiny)))
    converted = {m: c for m, c in modes.items() if m not in ("RGB", "array")}
    if converted:
        add(Finding("info", "image-modes", "Images that are not RGB are converted to RGB (16-bit and float greys "
                    "rescaled, transparency shown on white): "
                    + ", ".join(f"{c} {m}" for m, c in sorted(converted.items()))))


def _check_labels(data: Dataset, add, min_per_class: int, few: int, ratio: float) -> None:  # type: ignore[no-untyped-def]
    counts = data.class_counts()
    if len(counts) < 2:
        only = next(iter(counts), "none")
        add(Finding("error", "single-class", f"Only one class ('{only}') is present; a classifier needs two or more.",
                    fix="add examples of the other classes."))
        return
    too_few = tuple(f"{c} ({n})" for c, n in sorted(counts.items()) if n < min_per_class)
    if too_few:
        add(Finding("error", "too-few", f"Class(es) with fewer than {min_per_class} examples cannot be split for "
                    "training and testing", too_few, "add examples to these classes or remove them."))
    low = tuple(f"{c} ({n})" for c, n in sorted(counts.items()) if min_per_class <= n < few)
    if low:
        add(Finding("warning", "few-examples", f"Class(es) with fewer than {few} examples: their scores will be noisy",
                    low, "add examples if you can."))
    most, least = max(counts.values()), min(counts.values())
    if least and most / least > ratio:
        add(Finding("warning", "imbalance", f"Strong class imbalance: the largest class has {most / least:.0f}x "
                    "the examples of the smallest", (max(counts, key=counts.get), min(counts, key=counts.get)),
                    "look at macro-F1 and per-class recall, not only accuracy; consider collecting more of the rare class."))


# Labels that usually mean "no label" once a spreadsheet or pandas has written them out.
MISSING_LIKE = {"nan", "none", "null", "na", "n/a", "<na>", "nil", "undefined", "missing", "unknown", "?", "-",
                "--", "_", ".", "''", '""', "[]", "{}"}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _check_label_spelling(data: Dataset, add) -> None:  # type: ignore[no-untyped-def]
    """Class names that are probably not what was meant: missing-value markers, and one class
    written two ways (letter case or spacing; the same number written as 1, 1.0 and 01)."""
    counts = data.class_counts()

    def shown(names: list[str]) -> str:
        return " / ".join(f"'{n}' ({counts[n]})" for n in sorted(names))

    missing = [c for c in counts if c.strip().lower() in MISSING_LIKE]
    if missing:
        add(Finding("warning", "missing-like-label", f"{len(missing)} label(s) look like a missing value, not a class",
                    tuple(shown([c]) for c in sorted(missing)),
                    "fill in the real labels, or remove these rows (unlabelled rows go in a separate file)."))
    by_spelling: dict[str, list[str]] = defaultdict(list)
    by_number: dict[float, list[str]] = defaultdict(list)
    for c in counts:
        by_spelling[" ".join(c.casefold().split())].append(c)
        if _NUMBER.fullmatch(c.strip()):
            by_number[float(c)].append(c)
    variants = [v for v in by_spelling.values() if len(v) > 1]
    if variants:
        add(Finding("warning", "label-variants", f"{len(variants)} class(es) spelled in more than one way "
                    "(letter case or spacing) are counted as different classes", tuple(shown(v) for v in variants),
                    "write each class one way (e.g. all lower case) if they are the same class."))
    numbers = [v for v in by_number.values() if len(v) > 1]
    if numbers:
        add(Finding("warning", "label-number-variants", f"{len(numbers)} number(s) written in more than one way "
                    "are counted as different classes", tuple(shown(v) for v in numbers),
                    "write each class one way (1, not also 1.0 or 01); a spreadsheet often adds '.0'."))


def _check_duplicates(data: Dataset, add) -> None:  # type: ignore[no-untyped-def]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(data.content_hashes()):
        groups[h].append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    if not dups:
        return
    where = tuple(" = ".join(data.ids[i] for i in g[:3]) for g in dups)
    add(Finding("warning", "duplicates", f"{sum(len(g) - 1 for g in dups)} exact duplicate(s) in {len(dups)} group(s); "
                "headstart keeps each group within one split", where, "remove the copies if they are not intended."))
    if data.labels is not None:
        conflicts = tuple(" vs ".join(f"{data.ids[i]}={data.labels[i]}" for i in g[:3])
                          for g in dups if len({data.labels[i] for i in g}) > 1)
        if conflicts:
            add(Finding("warning", "conflicting-labels", f"{len(conflicts)} duplicate group(s) carry different labels",
                        conflicts, "decide on one label per item."))


def _check_between(data: Dataset, parts: dict[str, list[int]], add) -> None:  # type: ignore[no-untyped-def]
    hashes = data.content_hashes()
    where_of: dict[str, dict[str, int]] = defaultdict(dict)
    for split, idx in parts.items():
        for i in idx:
            where_of[hashes[i]].setdefault(split, i)
    leaks = [v for v in where_of.values() if len(v) > 1]
    if leaks:
        add(Finding("error", "leakage", f"{len(leaks)} item(s) appear in more than one split, which inflates test scores",
                    tuple(" = ".join(f"{s}: {data.ids[i]}" for s, i in v.items()) for v in leaks),
                    "remove each copy from all but one split."))
    if data.labels is None or "train" not in parts:
        return
    train = {data.labels[i] for i in parts["train"]}
    for split, idx in parts.items():
        if split == "train":
            continue
        other = {data.labels[i] for i in idx}
        unseen = sorted(other - train)
        if unseen:
            add(Finding("error", "label-mismatch", f"Label(s) in {split} that never occur in train", tuple(unseen),
                        "add training examples of these classes, or fix the label spelling."))
        absent = sorted(train - other)
        if absent and split == "test":
            add(Finding("warning", "label-mismatch", f"Class(es) with no {split} examples: they are not evaluated",
                        tuple(absent)))
