"""Every user-facing list of choices is read from its registry, and every head type rebuilds from its spec."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import torch

from headstart.backbones import SOURCES, ZOO, create_backbone
from headstart.cli.fit import command as fit_command
from headstart.domain.losses import ALIGNERS
from headstart.errors import BackboneError
from headstart.heads import HEADS, build_head
from headstart.methods import STRATEGIES
from headstart.methods.domain_adapt import SELF_TRAIN, SOURCE_ONLY, AdaptConfig, _method_list


def _option(name: str) -> click.Option:
    return next(p for p in fit_command.params if isinstance(p, click.Option) and name in p.opts)


def test_fit_adapt_choices_are_the_aligners() -> None:
    assert list(_option("--adapt").type.choices) == ["auto", SOURCE_ONLY, *ALIGNERS.names(), SELF_TRAIN]


def test_a_new_aligner_shows_up_in_the_cli_and_in_auto() -> None:
    ALIGNERS.register("test-only", ALIGNERS.get("coral"))
    try:
        assert "test-only" in _option("--adapt").type.choices
        assert _method_list(AdaptConfig(method="auto")) == [SOURCE_ONLY, *ALIGNERS.names(), SELF_TRAIN]
        AdaptConfig(method="test-only")  # accepted by the config as well
    finally:
        del ALIGNERS._entries["test-only"]
    assert "test-only" not in _option("--adapt").type.choices


def test_fit_strategy_help_lists_every_strategy() -> None:
    ctx = click.Context(fit_command)
    _, help_text = _option("--strategy").get_help_record(ctx)
    listed = help_text.split(":", 1)[1].split("[")[0].strip(" .").split(", ")
    assert listed == STRATEGIES.names()


def test_every_method_module_registers_its_strategies() -> None:
    import headstart.methods as methods

    modules = {p.stem for p in Path(methods.__file__).parent.glob("*.py")} - {"__init__", "base"}
    registered = {STRATEGIES.get(n).run.__module__.rpartition(".")[2] for n in STRATEGIES}
    # run_finetune serves full / partial / gradual; every module is imported by methods/__init__.
    assert registered == modules


def test_backbone_sources_dispatch_by_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SOURCES.names() == ["hf", "timm"]
    seen = []
    monkeypatch.setitem(SOURCES._entries, "hf", lambda ref, max_length: seen.append((ref, max_length))
                        or ZOO.get("raw-pixels").build())
    create_backbone("hf:some/model", max_length=None)
    assert seen == [("some/model", None)]
    with pytest.raises(BackboneError, match="Unknown backbone 'nope:x'"):
        create_backbone("nope:x")  # an unregistered prefix is a (mistyped) backbone name


SPECS = {
    "linear": {"type": "linear", "in_features": 4, "num_classes": 3},
    "mlp": {"type": "mlp", "in_features": 4, "num_classes": 3, "hidden": 5, "dropout": 0.1},
    "bottleneck": {"type": "bottleneck", "in_features": 4, "num_classes": 3, "hidden": 5, "dropout": 0.1},
    "cosine": {"type": "cosine", "in_features": 4, "num_classes": 3},
    "conse": {"type": "conse", "in_features": 4, "source_classes": 6, "text_dim": 5, "num_classes": 3, "top_k": 2,
              "scale": 20.0},
    "temperature": {"type": "temperature", "inner": {"type": "linear", "in_features": 4, "num_classes": 3},
                    "in_features": 4, "num_classes": 3, "temperature": 2.0},
    "prior": {"type": "prior", "inner": {"type": "temperature", "inner": {"type": "linear", "in_features": 4,
                                                                          "num_classes": 3},
                                         "in_features": 4, "num_classes": 3, "temperature": 2.0},
              "in_features": 4, "num_classes": 3},
}


def test_every_head_type_is_tested_here() -> None:
    assert sorted(HEADS) == sorted(SPECS)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_head_rebuilds_from_its_spec(kind: str) -> None:
    head = build_head(SPECS[kind]).eval()
    assert head.spec() == SPECS[kind]
    assert head(torch.randn(2, 4)).shape == (2, 3)


def test_an_unknown_head_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown head type 'nope'"):
        build_head({"type": "nope"})


def test_rank_scores_help_lists_every_ranker_and_the_default_is_the_library_default() -> None:
    from headstart.cli.rank import command as rank_command
    from headstart.rank import RANKERS
    from headstart.workflows.rank import DEFAULT_SCORES

    option = next(p for p in rank_command.params if isinstance(p, click.Option) and "--scores" in p.opts)
    _, help_text = option.get_help_record(click.Context(rank_command))
    listed = help_text.split("from:", 1)[1].split(";")[0].strip().split(", ")
    assert listed == RANKERS.names()
    assert option.default == ",".join(DEFAULT_SCORES)
