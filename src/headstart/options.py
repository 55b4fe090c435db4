"""Strategy configs: declared constraints, and options from text parsed by the config's annotations.

Every strategy config derives from :class:`Config` and declares what its values may be, the way
scikit-learn declares ``_parameter_constraints``: ``constraints = {"epochs": Interval(1), ...}``
(merged along the class hierarchy, so a subclass that changes a default keeps the rule). The one
declaration gives the errors on construction, the table of ``headstart strategies NAME`` and the docs.

``--option KEY=VALUE`` and ``fit(options={...})`` both come through :func:`parse_options`, so a value
is either the type the config declares or a clear ConfigError naming the option, what it expects
and what it got. Booleans accept only true/false/yes/no/on/off/1/0: a typo is an error, never
silently False.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal, get_args, get_origin

from .errors import ConfigError

__all__ = ["Config", "Constraint", "Interval", "OneOf", "describe", "describe_options", "option_fields",
           "parse_options", "parse_pairs"]


class Constraint(abc.ABC):
    """A rule a config value must satisfy; ``str()`` says it in words ("> 0", "one of a, b")."""

    @abc.abstractmethod
    def check(self, value: Any) -> bool:
        """Whether ``value`` satisfies the rule."""


@dataclasses.dataclass(frozen=True)
class Interval(Constraint):
    """A number between ``low`` and ``high`` (None: unbounded), each end closed unless said open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False  # NaN and infinity are never a setting
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return (f"a finite number {'>' if self.low_open else '>='} {self.low:g}" if self.low is not None
                    else "a finite number")
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclasses.dataclass(frozen=True)
class OneOf(Constraint):
    """One of fixed ``choices``, or of a callable's (a registry's names, read when checked)."""

    choices: tuple[Any, ...] | Callable[[], Iterable[Any]]

    def values(self) -> tuple[Any, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def check(self, value: Any) -> bool:
        return value in self.values()

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.values()))


@dataclasses.dataclass(frozen=True)
class Each(Constraint):
    """Every item of a tuple satisfies ``inner`` (and, with ``non_empty``, there is at least one)."""

    inner: Constraint
    non_empty: bool = False

    def check(self, value: Any) -> bool:
        return isinstance(value, tuple) and (bool(value) or not self.non_empty) and all(map(self.inner.check, value))

    def __str__(self) -> str:
        return f"{'a non-empty list' if self.non_empty else 'a list'} of values, each {self.inner}"


class Config:
    """Base of the strategy configs (frozen dataclasses): checks the declared ``constraints`` on
    construction and gives ``to_dict``. ``notes`` holds a short phrase per option for the help."""

    constraints: ClassVar[dict[str, Constraint]] = {}
    notes: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for name, rule in declared(type(self), "constraints").items():
            value = getattr(self, name)
            if not rule.check(value):
                strategy = getattr(self, "type", None) or "NAME"
                raise ConfigError(f"`{name}` must be {rule}, got {value!r}.",
                                  fix=f"`headstart strategies {strategy}` lists every option with its rule.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def declared(config_class: type, attribute: str) -> dict[str, Any]:
    """``constraints`` or ``notes`` merged along the class hierarchy, the subclass's entries winning."""
    merged: dict[str, Any] = {}
    for cls in reversed(config_class.__mro__):
        merged.update(cls.__dict__.get(attribute, {}))
    return merged

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def option_fields(config_class: type) -> dict[str, Any]:
    """The settable fields of a config dataclass, with their resolved annotations."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class) if f.init}


def describe(annotation: Any) -> str:
    """The expected value in words, for errors and ``--help``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        plural = {int: "integers", float: "numbers", str: "texts"}
        return f"a comma-separated list of {plural.get(args[0], describe(args[0]))}" if args else "a comma-separated list"
    if origin is typing.Union:
        return " or ".join(describe(a) for a in args if a is not type(None))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a text"}.get(annotation, str(annotation))


def _convert(key: str, raw: Any, annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    bad = ConfigError(f"Option `{key}` expects {describe(annotation)}, got {raw!r}.")
    if origin is typing.Union:
        if raw is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(key, raw, a)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if raw in args:
            return raw
        raise bad
    if origin is tuple:
        items = [x.strip() for x in raw.split(",") if x.strip()] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise bad
        inner = args[0] if args else str
        return tuple(_convert(key, x, inner) for x in items)
    if annotation is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise bad
    if annotation is int:
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw.strip().replace("_", ""))
            except ValueError:
                try:
                    f = float(raw)
                except ValueError:
                    raise bad from None
                if f.is_integer():  # 1e5 is an integer
                    return int(f)
        raise bad
    if annotation is float:
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                raise bad from None
        raise bad
    if annotation is str:
        if isinstance(raw, str):
            return raw
        raise bad
    return raw


def parse_options(config_class: type, options: dict[str, Any], *, strategy: str) -> dict[str, Any]:
    """Typed values for ``options`` (text or already typed); unknown names are an error."""
    fields = option_fields(config_class)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"Strategy '{strategy}' has no option(s) {', '.join(unknown)}.",
                          fix=f"its options are: {', '.join(sorted(fields))}." if fields else "it takes no options.")
    return {k: _convert(k, v, fields[k]) for k, v in options.items()}


def parse_pairs(config_class: type, pairs: tuple[str, ...], *, strategy: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the CLI's ``--option``) to typed values."""
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {pair!r} is not KEY=VALUE.", fix="write e.g. --option epochs=3.")
        raw[key.strip()] = value
    return parse_options(config_class, raw, strategy=strategy)


def _text(value: Any) -> str:
    """A default as a user would type it: ``0.001`` not ``0.0010000000000000002``, ``true`` not ``True``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_options(config_class: type) -> list[dict[str, str]]:
    """One row per option: name, expected type, default, the declared rule and the note (for help and docs)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.init}
    rules, notes = declared(config_class, "constraints"), declared(config_class, "notes")
    rows = []
    for name, annotation in option_fields(config_class).items():
        default = defaults.get(name)
        shown = ",".join(map(_text, default)) if isinstance(default, tuple) else _text(default)
        rows.append({"name": name, "type": describe(annotation), "default": shown or "(empty)",
                     "rule": str(rules[name]) if name in rules else "", "note": notes.get(name, "")})
    return rows
