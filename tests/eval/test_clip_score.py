"""CLIP score with a tiny random CLIP written to disk (no downloads)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from ldm.eval.clip_score import CLIPScorer  # noqa: E402
from ldm.eval.runner import EvalConfig, evaluate  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny_clip")
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, bos_token_id=0,
                eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    return str(folder)


def test_clip_score_is_100_times_the_clamped_cosine(tiny_clip):
    scorer = CLIPScorer(tiny_clip, local_files_only=True)
    images = torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8)
    captions = ["a red circle", "a blue square", "dog"]
    scores = scorer(images, captions)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 100)).all()
    # independent computation with the model's own projections
    pixels = scorer.preprocess(images)
    assert pixels.shape == (3, 3, 32, 32)
    tokens = scorer.tokenizer(captions, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = scorer.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                           pixel_values=pixels)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    torch.testing.assert_close(scores, 100 * cos.clamp_min(0), rtol=1e-5, atol=1e-5)


def test_preprocessing_resizes_the_short_side_and_centre_crops(tiny_clip):
    scorer = CLIPScorer(tiny_clip, local_files_only=True)
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 255  # the centre 32 columns of the 32x64 resize are white
    pixels = scorer.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None])
    white = (1.0 - scorer.mean.view(3)) / scorer.std.view(3)
    torch.testing.assert_close(pixels[0, :, 16, 16], white.float(), rtol=1e-4, atol=1e-4)


def test_clip_metric_through_evaluate_with_folder_captions(tiny_clip, tmp_path):
    for i, caption in enumerate(["a cat", "a dog", "a car"]):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(caption)
    result = evaluate(tmp_path, None, "clip", EvalConfig(clip_model=tiny_clip, batch_size=2))
    assert 0 <= result["clip_score"] <= 100 and "clip_score_std" in result


def test_caption_count_must_match(tiny_clip):
    scorer = CLIPScorer(tiny_clip, local_files_only=True)
    with pytest.raises(ValueError, match="captions"):
        scorer(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ["one"])
    with pytest.raises(ValueError, match="cannot load CLIP"):
        CLIPScorer(str(tiny_clip) + "_missing", local_files_only=True)
