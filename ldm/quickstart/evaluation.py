"""The measurements of the quickstart: autoencoder reconstruction, judge scores, FID and
precision/recall in the scenes feature space, and mask-guided inpainting with the text model.

Each function takes arrays (uint8 images [N, H, W, 3]) or a loaded model, and returns plain
numbers for the report; `scripts/quickstart.py` strings them together.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ldm.data.scenes import Scenes, render_scene
from ldm.quickstart import judge

logger = logging.getLogger(__name__)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_model_input(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> [B, 3, H, W] in [-1, 1] on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.to(device)


def read_pngs(paths: Sequence[str | Path]) -> np.ndarray:
    """uint8 [N, H, W, 3] from PNG files (in the order given)."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def scene_options(config_path: str | Path) -> dict[str, Any]:
    """The `Scenes` arguments of a quickstart config's train data (size, max_objects,
    object_size, backgrounds, ...), without those that select or rename what is returned, so
    that evaluation draws the same kind of scenes as training did."""
    from omegaconf import OmegaConf

    params = OmegaConf.load(config_path).data.params.train.get("params", {})
    options = OmegaConf.to_container(params, resolve=True)
    for key in ("keys", "key_map", "num_samples", "split"):
        options.pop(key, None)
    return options


def validation_scenes(size: int, n: int, max_objects: int, seed: int = 0,
                      **scene_options: Any) -> tuple[np.ndarray, list[str], Scenes]:
    """The first `n` validation scenes: uint8 images [n, size, size, 3], captions, and the data set.
    Validation captions with several objects never occur in the train split (held out).
    `scene_options` are further `Scenes` arguments (e.g. `object_size`, `backgrounds`)."""
    dataset = Scenes(size=size, split="validation", max_objects=max_objects, seed=seed, **scene_options)
    scenes = [dataset.scene(i) for i in range(n)]
    images = np.stack([render_scene(s, size)[0] for s in scenes])
    return images, [s.caption for s in scenes], dataset


@torch.no_grad()
def autoencoder_metrics(autoencoder: Any, images: np.ndarray, batch_size: int = 128) -> dict[str, Any]:
    """PSNR (dB) and SSIM of the posterior-mode reconstructions, and the latent shape (C, h, w)."""
    from ldm.eval import psnr, ssim

    device = next(autoencoder.parameters()).device
    psnrs, ssims, latent_shape = [], [], None
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], device)
        z = autoencoder.encode(x).mode()
        latent_shape = tuple(int(s) for s in z.shape[1:])
        rec = to_uint8(autoencoder.decode(z))
        real = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2)
        fake = torch.from_numpy(rec).permute(0, 3, 1, 2)
        psnrs.append(psnr(real, fake).clamp(max=100.0))
        ssims.append(ssim(real, fake))
    return {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
            "latent_shape": list(latent_shape or ()), "n_eval": int(len(images))}


def judge_scores(images: np.ndarray, captions: Sequence[str]) -> tuple[dict[str, float], list[bool]]:
    """`judge.score` figures and each pair's verdict (True: the whole caption is right)."""
    verdicts = [judge.judge(img, cap) for img, cap in zip(images, captions)]
    n = len(verdicts)
    summary = judge.score(images, captions) if n else {}
    return summary, [v.correct for v in verdicts]


def fid_precision_recall(extractor: Any, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """FID and improved precision/recall (k = 3) of `fake` against `real` uint8 images."""
    from ldm.eval import fid_from_features, precision_recall
    from ldm.quickstart.features import image_features

    real_f, fake_f = image_features(extractor, real), image_features(extractor, fake)
    precision, recall = precision_recall(real_f, fake_f, k=3)
    return {"fid": fid_from_features(real_f, fake_f), "precision": precision, "recall": recall,
            "n": int(len(fake))}


@torch.no_grad()
def inpaint_with_text_model(model: Any, images: np.ndarray, masks: np.ndarray, captions: Sequence[str],
                            steps: int = 25, scale: float = 3.0, batch_size: int = 64,
                            seed: int = 0, eta: float = 0.0) -> np.ndarray:
    """Fill the holes (`masks` [N, H, W], 1 = hole) of `images` with the text-to-image LDM,
    conditioned on the scenes' captions: DDIM with the known latent re-imposed outside the hole
    at every step (the `mask`/`x0` arguments of the sampler; the original's latent inpainting),
    then the decoded result pasted into the hole of the input image. `eta` is DDIM's: 0 is
    deterministic, 1 adds fresh noise at every step as DDPM's ancestral sampling does."""
    from ldm.models.diffusion.ddim import DDIMSampler

    device = model.device
    sampler = DDIMSampler(model)
    generator = torch.Generator().manual_seed(seed)
    # the known region's noise and (eta > 0) every step's noise come from the global generators:
    # seeded here, and restored afterwards, so the result depends on `seed` only
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        out = []
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size], device)
            hole = torch.from_numpy(masks[start:start + batch_size]).float()[:, None].to(device)
            z0 = model.get_first_stage_encoding(model.encode_first_stage(x))
            # latent keep-mask: 1 where the latent is known (no hole anywhere under the latent pixel)
            keep = 1.0 - torch.nn.functional.adaptive_max_pool2d(hole, z0.shape[-2:])
            batch_captions = list(captions[start:start + batch_size])
            n = len(batch_captions)
            c = model.get_learned_conditioning(batch_captions)
            uc = model.get_learned_conditioning([""] * n) if scale != 1.0 else None
            x_t = torch.randn(z0.shape, generator=generator).to(device)
            with model.ema_scope():
                z, _ = sampler.sample(S=steps, batch_size=n, shape=tuple(z0.shape[1:]), conditioning=c,
                                      mask=keep, x0=z0, x_T=x_t, eta=eta, verbose=False,
                                      unconditional_guidance_scale=scale, unconditional_conditioning=uc)
            filled = model.decode_first_stage(z).clamp(-1, 1)
            result = hole * filled + (1 - hole) * x
            out.append(to_uint8(result))
    return np.concatenate(out)


def masked_psnr(real: np.ndarray, fake: np.ndarray, keep: np.ndarray) -> float:
    """PSNR (dB) over the pixels where `keep` [N, H, W] is 1 (the region outside the holes)."""
    diff = (real.astype(np.float64) - fake.astype(np.float64)) ** 2
    weights = np.broadcast_to(keep[..., None], diff.shape)
    mse = float((diff * weights).sum() / max(1.0, weights.sum()))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
