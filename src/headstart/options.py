"""Strategy options from text, parsed by the config's own type annotations.

``--option KEY=VALUE`` and ``fit(options={...})`` both come through here, so a value is either the
type the config declares or a clear ConfigError naming the option, what it expects and what it got.
Booleans accept only true/false/yes/no/on/off/1/0: a typo is an error, never silently False.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, get_args, get_origin

from .errors import ConfigError

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
        return f"a comma-separated list of {describe(args[0])}s" if args else "a comma-separated list"
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
                          fix=f"its options are: {', '.join(sorted(fields))}.")
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
