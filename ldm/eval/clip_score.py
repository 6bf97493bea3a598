"""CLIP score (Hessel et al. 2021, "CLIPScore"): w * max(cos(E_image, E_text), 0), averaged.

`w = 100` by default, the convention of torchmetrics and most text-to-image papers
(Hessel et al. use w = 2.5). The model is a transformers `CLIPModel` loaded from a local folder
or a hub name. Images are preprocessed as OpenAI's CLIP does: bicubic resize of the shorter
side to the model's input size, centre crop, scaling to [0, 1] and normalisation with the mean
and std of the model's `preprocessor_config.json` (OpenAI's values when there is none).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


def _preprocessor_config(name_or_path: str, local_files_only: bool) -> dict:
    """The model's preprocessor_config.json as a dict ({} when there is none)."""
    local = Path(name_or_path) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(name_or_path).is_dir():
        return {}
    try:
        from transformers.utils import cached_file

        path = cached_file(name_or_path, "preprocessor_config.json",
                           local_files_only=local_files_only)
        return json.loads(Path(path).read_text()) if path else {}
    except Exception as err:  # an absent file is normal; a network error only loses the config
        logger.info("no preprocessor config for %s (%s); using OpenAI's CLIP values", name_or_path, err)
        return {}


class CLIPScorer:
    """Computes per-pair CLIP scores with a transformers CLIP model."""

    def __init__(self, model_name_or_path: str = DEFAULT_CLIP_MODEL,
                 device: str | torch.device = "cpu", weight: float = 100.0,
                 local_files_only: bool = False) -> None:
        """`model_name_or_path`: a folder written by `save_pretrained` or a hub name;
        `weight`: the w of the score (100 by default)."""
        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(model_name_or_path,
                                                   local_files_only=local_files_only)
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path,
                                                           local_files_only=local_files_only)
        except OSError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"cannot load CLIP model '{model_name_or_path}': {first}") from err
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        self.weight = weight
        config = _preprocessor_config(model_name_or_path, local_files_only)
        size = self.model.config.vision_config.image_size
        crop = config.get("crop_size", size)
        self.crop_size = int(crop.get("height", size) if isinstance(crop, dict) else crop)
        resize = config.get("size", size)
        self.resize_to = int(resize.get("shortest_edge", size) if isinstance(resize, dict) else resize)
        self.mean = torch.tensor(config.get("image_mean", OPENAI_CLIP_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(config.get("image_std", OPENAI_CLIP_STD)).view(1, 3, 1, 1)
        self.max_length = self.model.config.text_config.max_position_embeddings

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised pixel values [B, 3, S, S]."""
        out = []
        for image in images:
            pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
            w, h = pil.size  # shorter side -> resize_to, longer side floored (transformers' rule)
            if w <= h:
                new_w, new_h = self.resize_to, int(self.resize_to * h / w)
            else:
                new_w, new_h = int(self.resize_to * w / h), self.resize_to
            pil = pil.resize((new_w, new_h), Image.BICUBIC)
            left, top = (new_w - self.crop_size) // 2, (new_h - self.crop_size) // 2
            pil = pil.crop((left, top, left + self.crop_size, top + self.crop_size))
            out.append(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1))
        return (torch.stack(out) - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """CLIP score of each (image, caption) pair, [B]."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        tokens = self.tokenizer(list(captions), padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(self.device)
        pixels = self.preprocess(images).to(self.device)
        image_emb = self.model.get_image_features(pixel_values=pixels)
        text_emb = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                attention_mask=tokens["attention_mask"])
        image_emb = _embedding(image_emb)
        text_emb = _embedding(text_emb)
        cos = torch.nn.functional.cosine_similarity(image_emb, text_emb, dim=-1)
        return self.weight * cos.clamp_min(0.0).cpu()


def _embedding(output) -> torch.Tensor:
    """Accept a tensor or a model output holding the projected embedding (transformers 4 vs 5)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP output type {type(output).__name__}")
