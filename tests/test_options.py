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


@pytest.mark.parametrize("strategy,options,message", [
    ("lp-ft", {"lr": 0}, "`lr` must be a finite number > 0, got 0"),  # lp-ft changes lr's default; the parent's rule still holds
    ("linear-probe", {"Cs": ()}, "`Cs` must be a non-empty list of values, each a finite number > 0"),
    ("linear-probe", {"Cs": (1.0, -1.0)}, "`Cs` must be a non-empty list of values, each a finite number > 0"),
    ("full", {"warmup": 1.0}, "`warmup` must be in [0, 1)"),
    ("full", {"layer_decay": 0}, "`layer_decay` must be in (0, 1]"),
    ("full", {"schedule": "linear"}, "`schedule` must be one of cosine, onecycle, constant"),
    ("domain-adapt", {"method": "dan"}, "`method` must be one of source-only, auto, dann"),
    ("lora", {"r": 0}, "`r` must be a finite number >= 1"),
    ("setfit", {"head": "svm"}, "`head` must be one of linear, mlp"),
    ("auto", {"budget_s": float("nan")}, "`budget_s` must be a finite number > 0"),
    ("full", {"lr": float("inf")}, "`lr` must be a finite number > 0, got inf"),
    ("linear-probe", {"Cs": "1,1e400"}, "`Cs` must be a non-empty list of values, each a finite number > 0"),
    ("full", {"warmup": float("-inf")}, "`warmup` must be in [0, 1)"),
])
def test_declared_constraints_are_checked(strategy, options, message) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(strategy, **options)
    assert message in str(err.value)
    assert f"headstart strategies {strategy}" in str(err.value)  # the way out: that strategy's option list


def test_every_declared_constraint_names_a_real_option_and_accepts_its_default() -> None:
    from headstart.options import declared

    for name in STRATEGIES:
        cls = STRATEGIES.get(name).config_class
        rules = declared(cls, "constraints")
        assert set(rules) <= set(option_fields(cls)), (name, set(rules) - set(option_fields(cls)))
        default = make_config(name)
        assert all(rule.check(getattr(default, key)) for key, rule in rules.items()), name


def test_strategies_command_lists_options_with_their_rules() -> None:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    result = CliRunner().invoke(cli, ["strategies", "lp-ft"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "│ lr " in line)
    assert "2e-05" in row and "> 0" in row  # lp-ft's own default, the inherited rule
    listing = CliRunner().invoke(cli, ["strategies"], env={"COLUMNS": "200"})
    assert all(n in listing.output for n in STRATEGIES.names())
    rows = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if line.count("│") > 3}
    assert "│ yes " in rows["lp-ft"] and "│ no " in rows["linear-probe"] and "if it chooses to" in rows["auto"]
    assert "unlabelled data (--unlabelled)" in rows["pseudo-label"]
    bad = CliRunner().invoke(cli, ["strategies", "nope"])
    assert bad.exit_code == 2 and "linear-probe" in bad.output


@pytest.mark.parametrize("args,message", [
    (["--budget", "90s"], "--budget is the time budget of --strategy auto"),
    (["--strategy", "auto", "--budget", "-5s"], "--budget must be a positive, finite time"),
    (["--strategy", "auto", "--budget", "infs"], "--budget must be a positive, finite time"),
    (["--strategy", "auto", "--lr", "1e-3"], "--lr does not apply to it"),
    (["--strategy", "prototypes", "--option", "lr=1"], "it takes no options"),
])
def test_fit_flags_that_do_not_apply_are_refused_before_any_work(args, message, tmp_path) -> None:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    result = CliRunner().invoke(cli, ["fit", "builtin:digits:4", "--out", str(tmp_path / "m"), *args])
    said = result.output + str(result.exception or "")  # headstart's errors reach main() as exceptions
    assert result.exit_code != 0 and message in said, said
    assert not (tmp_path / "m").exists()
