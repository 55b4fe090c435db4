"""Zero-shot, prototypes, SetFit-style pairs, and the label-budget ladder."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import ConfigError
from headstart.methods.setfit import sample_pairs
from headstart.methods.prototypes import prototype_head
from headstart.methods.zero_shot import clip_zero_shot, conse_head, label_embedding_head, nli_zero_shot, readable


def test_zero_shot_from_label_names_on_real_news(bbc_small, minilm) -> None:
    """Real weights and data: minilm-l6 and the five BBC topic names, no labelled example."""
    head = label_embedding_head(minilm, bbc_small.label_names)
    feats = headstart.extract_features(minilm, bbc_small, progress=False)
    pred = head(torch.as_tensor(feats)).argmax(1).numpy()
    truth = np.array([bbc_small.label_names.index(x) for x in bbc_small.labels])
    assert (pred == truth).mean() >= 0.7  # chance is 0.2; on all 2225 articles it is 0.86


def test_zero_shot_strategy_saves_and_reloads(bbc_small, tmp_path) -> None:
    news = bbc_small.subset(range(0, 150, 3))
    model = headstart.fit(news, backbone="minilm-l6", max_length=128, strategy="zero-shot", out=tmp_path / "z",
                          progress=False, baseline=False)
    assert model.info["strategy"]["details"]["labelled_examples_used"] == 0
    loaded = headstart.load(tmp_path / "z")
    assert np.allclose(loaded.predict_proba(news.items[:5]), model.predict_proba(news.items[:5]), atol=1e-6)


def test_conse_names_real_photos(lite0, minilm) -> None:
    """ConSE on skimage's photos: the ImageNet head and MiniLM name embeddings, no labelled example."""
    from skimage import data as skd

    photos = {"cat": skd.chelsea(), "coffee": skd.coffee(), "rocket": skd.rocket(), "astronaut": skd.astronaut()}
    names = list(photos)
    head = conse_head(lite0, names, minilm)
    ds = headstart.load_data(list(photos.values()), modality="image")
    feats = headstart.extract_features(lite0, ds, use_cache=False, progress=False)
    pred = head(torch.as_tensor(feats)).argmax(1).tolist()
    assert sum(p == i for i, p in enumerate(pred)) >= 3, [names[p] for p in pred]  # chance: 1 of 4


def test_conse_needs_an_imagenet_head(minilm) -> None:
    pixels = headstart.create_backbone("raw-pixels")
    with pytest.raises(ConfigError, match="ImageNet-1k head"):
        conse_head(pixels, ["a", "b"], minilm)


def test_prototypes_on_separable_data_and_scale_from_validation() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    y = np.repeat(np.arange(3), 5)
    x = (centres[y] + rng.normal(size=(15, 16))).astype(np.float32)
    yv = np.repeat(np.arange(3), 20)
    xv = (centres[yv] + rng.normal(size=(60, 16))).astype(np.float32)
    head = prototype_head(x, y, 3, x_val=xv, y_val=yv)
    assert (head(torch.as_tensor(xv)).argmax(1).numpy() == yv).mean() > 0.95
    assert float(head.scale) > 10  # confident separable classes get a sharper softmax than the default
    with pytest.raises(ValueError, match="no support"):
        prototype_head(x, np.zeros(15, dtype=int), 3)


def test_pair_sampling_is_linear_and_labelled_right() -> None:
    y = np.repeat(np.arange(20), 8)  # 20 classes, 160 examples
    pairs = sample_pairs(y, 4, random.Random(0))
    assert len(pairs) == 2 * 4 * len(y)  # all pairs would be 160 * 159 / 2 = 12720
    assert all((y[a] == y[b]) == bool(same) and a != b for a, b, same in pairs)


def test_setfit_strategy_tunes_the_encoder_and_round_trips(bbc_small, tiny_bert_dir, tmp_path) -> None:
    news = bbc_small.subset(range(0, 150, 3))
    before = headstart.create_backbone(f"hf:{tiny_bert_dir}")
    model = headstart.fit(news, backbone=f"hf:{tiny_bert_dir}", strategy="setfit", options={"pairs_per_example": 2},
                          out=tmp_path / "s", progress=False, baseline=False)
    assert model.backbone_trained
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), model.backbone.state_dict().values()))
    details = model.info["strategy"]["details"]
    assert details["pairs_per_epoch"] == 2 * 2 * model.info["data"]["splits"]["train"]
    loaded = headstart.load(tmp_path / "s")
    assert np.allclose(loaded.predict_proba(news.items[:4]), model.predict_proba(news.items[:4]), atol=1e-6)


def test_nli_zero_shot_with_a_tiny_random_entailment_model(tiny_bert_dir, tmp_path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    cfg = BertConfig.from_pretrained(tiny_bert_dir)
    cfg.num_labels = 3
    cfg.id2label = {0: "contradiction", 1: "neutral", 2: "entailment"}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "nli")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "nli")
    p = nli_zero_shot(str(tmp_path / "nli"), ["the match ended 2-1", "shares fell"], ["sport", "business", "tech"])
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    cfg.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "sentiment")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "sentiment")
    with pytest.raises(ConfigError, match="not an NLI model"):
        nli_zero_shot(str(tmp_path / "sentiment"), ["x"], ["a", "b"])


def test_clip_zero_shot_with_a_tiny_random_clip(tiny_bert_dir, tmp_path) -> None:
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    cfg = CLIPConfig(text_config={"vocab_size": tok.vocab_size, "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64},
                     vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                                    "num_hidden_layers": 2, "num_attention_heads": 2}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    images = [np.full((40, 50, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    p = clip_zero_shot(tmp_path / "clip", images, ["cat", "dog"])
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_readable_label_names() -> None:
    assert readable("sci.space") == "sci space" and readable("no_finding") == "no finding"


def test_ladder_command_writes_table_plot_and_recommendation(bbc_small, tmp_path) -> None:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    news = bbc_small.subset(range(0, 150, 2))
    from conftest import write_csv

    csv = write_csv(tmp_path / "news.csv", zip(news.items, news.labels))
    result = CliRunner().invoke(cli, ["ladder", str(csv), "--budgets", "0,4", "--seeds", "2", "--out",
                                      str(tmp_path / "l")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "l" / "ladder.json").read_text())
    rungs = {(r["budget"], r["strategy"]): r for r in report["summary"]}
    assert set(rungs) == {("0", "zero-shot"), ("4", "prototypes"), ("4", "linear-probe")}
    assert rungs[("4", "linear-probe")]["runs"] == 2 and rungs[("0", "zero-shot")]["mean"] > report["chance"]
    assert (tmp_path / "l" / "ladder.png").read_bytes()[:4] == b"\x89PNG"
    assert "Recommendation" in result.output
    bad = CliRunner().invoke(cli, ["ladder", str(csv), "--budgets", "0,x"])
    assert bad.exit_code != 0 and "'x' is not a number" in str(bad.exception)


def test_siamese_recipe_on_an_image_backbone(image_folder, tiny_vit_dir) -> None:
    """The same pair objective tunes a (tiny random) ViT: the image half of the SetFit-style recipe."""
    before = headstart.create_backbone(f"hf:{tiny_vit_dir}")
    model = headstart.fit(str(image_folder), backbone=f"hf:{tiny_vit_dir}", strategy="setfit", val=0.2, test=0.2,
                          options={"pairs_per_example": 2, "batch_size": 4}, progress=False, baseline=False)
    assert model.backbone_trained and model.info["strategy"]["details"]["history"][0]["pairs"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), model.backbone.state_dict().values()))
    proba = model.predict_proba(str(image_folder / "cat"))
    assert proba.shape == (6, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_ladder_finetune_rungs_and_cheapest_recommendation(bbc_small, tiny_bert_dir) -> None:
    """``--finetune`` adds the SetFit-style and LP-FT rungs (on a tiny random BERT, for the code
    path); with a margin that admits every rung the recommendation is the cheapest one."""
    from headstart.workflows.ladder import run_ladder

    news = bbc_small.subset(range(0, 150, 2))
    result = run_ladder(news, budgets=(4,), seeds=1, backbone=f"hf:{tiny_bert_dir}", finetune=True, margin=1.0,
                        options={"setfit": {"pairs_per_example": 1, "batch_size": 4},
                                 "lp-ft": {"epochs": 1, "batch_size": 4}}, progress=False)
    rungs = {r["strategy"]: r for r in result["summary"]}
    assert set(rungs) == {"prototypes", "linear-probe", "setfit", "lp-ft"}
    assert all(0.0 <= r["mean"] <= 1.0 and r["runs"] == 1 for r in rungs.values())
    classes = len(news.label_names)
    assert {r["labels_used"] for r in result["rows"]} == {(4 + 2) * classes}  # 4 train + 2 val per class
    assert result["recommended"]["strategy"] == "prototypes"


def test_ladder_recommendation_accounts_for_the_spread_over_seeds() -> None:
    from headstart.workflows.ladder import summarise

    def rows(budget, strategy, accs):
        return [{"budget": budget, "strategy": strategy, "seed": i, "accuracy": a, "seconds": 1.0}
                for i, a in enumerate(accs)]

    # 8 per class is 3 points behind 32 per class on average, but the seeds spread by 5 points:
    # a 2-point margin alone would say "32", the noise says they cannot be told apart.
    noisy = rows(8, "linear-probe", [0.80, 0.85, 0.90]) + rows(32, "linear-probe", [0.87, 0.88, 0.89])
    result = summarise(noisy, margin=0.02, n_test=400)
    assert result["recommended"]["budget"] == "8" and result["tolerance"] > 0.05
    assert "spread over seeds" in result["recommendation"] and result["warnings"] == []
    # The same means with no spread: the 32-per-class rung is needed.
    steady = rows(8, "linear-probe", [0.85] * 3) + rows(32, "linear-probe", [0.88] * 3)
    assert summarise(steady, margin=0.02, n_test=400)["recommended"]["budget"] == "32"
    # A 12-item test split is said in words.
    assert "only 12 items" in summarise(steady, margin=0.02, n_test=12)["warnings"][0]
