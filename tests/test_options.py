"""Options are parsed by each config's annotations: right types, clear errors, never silently false."""

from __future__ import annotations

import pytest

from headstart.methods import STRATEGIES, make_config
from headstart.errors import ConfigError
from headstart.options import describe, option_fields, parse_pairs


def test_values_are_parsed_by_annotation() -> None:
    probe = make_config("linear-probe", Cs="0.1,1,1e3", head="mlp", refit_on_val="no", max_iter="1e3")
    assert probe.Cs == (0.1, 1.0, 1000.0) and probe.head == "mlp" and probe.refit_on_val is False
    assert probe.max_iter == 1000 and isinstance(probe.max_iter, int)
    full = make_config("full", restore_best="TRUE", epochs=3, lr=1e-4)
    assert full.restore_best is True and full.epochs == 3


@pytest.mark.parametrize("strategy,pairs,message", [
    ("full", ("restore_best=ture",), "`restore_best` expects true or false, got 'ture'"),
    ("linear-probe", ("Cs=0.1,x",), "`Cs` expects a number, got 'x'"),
    ("linear-probe", ("head=svm",), "`head` expects one of 'linear', 'mlp', got 'svm'"),
    ("full", ("epochs=2.5",), "`epochs` expects an integer, got '2.5'"),
    ("full", ("epochs",), "is not KEY=VALUE"),
    ("full", ("epoch=3",), "has no option(s) epoch"),
])
def test_wrong_values_are_clear_errors(strategy, pairs, message) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(strategy, **parse_pairs(STRATEGIES.get(strategy).config_class, pairs, strategy=strategy))
    assert message in str(err.value)


def test_every_strategy_option_has_a_parseable_annotation() -> None:
    # Every option of every registered strategy can be described (for --help) and its default
    # survives a round trip through text: what `--option` would receive.
    for name in STRATEGIES:
        cls = STRATEGIES.get(name).config_class
        default = make_config(name)
        for key, annotation in option_fields(cls).items():
            assert "<" not in describe(annotation), (name, key, annotation)
            value = getattr(default, key)
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            if isinstance(value, tuple) and not value:
                continue  # an empty list has no text form but the default
            assert getattr(make_config(name, **{key: text}), key) == value, (name, key)
