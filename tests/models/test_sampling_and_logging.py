"""The ancestral sampler, `sample_log` (DDIM), `log_images`, and the pixel-space DDPM."""
from __future__ import annotations

import copy
import zlib

import pytest
import torch

from ldm.models.diffusion.ddpm import DDPM
from ldm.util import instantiate_from_config
from tests.models.tiny import LDM, TINY_KL, UNET_PLAIN, BlobImages, make_ldm


class CaptionEncoder(torch.nn.Module):
    """Strings -> [B, 5, 16]: a deterministic stand-in for a text encoder."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(97, 16)

    def encode(self, texts):
        ids = torch.tensor([[zlib.crc32(f"{t}{i}".encode()) % 97 for i in range(5)] for t in texts])
        return self.table(ids)


def batch_of(n: int = 2):
    samples = [BlobImages(length=8)[i] for i in range(n)]
    return {k: (torch.stack([torch.as_tensor(s[k]) for s in samples]) if k != "caption" else [s[k] for s in samples])
            for k in samples[0]}


def test_ancestral_sampling():
    model = make_ldm(timesteps=50, log_every_t=10).eval()
    cond = torch.randn(3, 5, 16)
    torch.manual_seed(0)
    samples, intermediates = model.sample(cond, batch_size=2, return_intermediates=True, verbose=False)
    assert samples.shape == (2, 4, 8, 8) and torch.isfinite(samples).all()
    assert len(intermediates) == 1 + 6  # x_T, then t = 49, 40, 30, 20, 10, 0
    torch.manual_seed(0)
    again = model.sample(cond, batch_size=2, verbose=False)
    assert torch.equal(samples, again)
    # latent inpainting: where mask = 1 the result is x0 noised to t = 0
    x0 = torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., :4] = 1.0
    filled = model.p_sample_loop(cond[:2], (2, 4, 8, 8), mask=mask, x0=x0, verbose=False)
    torch.testing.assert_close(filled[..., :4], x0[..., :4], atol=0.2, rtol=0)
    _, x0_row = model.progressive_denoising(cond, (4, 8, 8), batch_size=2, verbose=False)
    assert len(x0_row) == 6 and x0_row[0].shape == (2, 4, 8, 8)
    samples, inter = model.sample_log(cond[:2], batch_size=2, ddim=True, ddim_steps=5, eta=0.0)
    assert samples.shape == (2, 4, 8, 8) and set(inter) == {"x_inter", "pred_x0"}


def test_log_images_of_a_text_model():
    model = make_ldm(timesteps=50, log_every_t=10, cond_stage_key="caption", use_ema=True,
                     cond_stage_config={"target": "tests.models.test_sampling_and_logging.CaptionEncoder"},
                     conditioning_dropout={"caption": {"p": 0.1, "val": ""}}).eval()
    batch = batch_of(2)
    batch["image"] = torch.randn(2, 8, 8, 4)
    log = model.log_images(batch, N=2, n_row=2, ddim_steps=4, plot_denoise_rows=True,
                           unconditional_guidance_scale=3.0, split="train")
    for key in ("inputs", "reconstruction", "conditioning", "diffusion_row", "samples", "denoise_row",
                "samples_cfg_scale_3.00", "samples_inpainting", "mask", "samples_outpainting", "progressive_row"):
        assert key in log, key
        assert torch.isfinite(log[key]).all(), key
    assert log["samples"].shape == (2, 4, 8, 8)
    assert log["conditioning"].shape == (2, 3, 8, 8)  # the captions rendered as images
    assert log["diffusion_row"].ndim == 3
    only = model.log_images(batch, N=2, sample=False, plot_progressive_rows=False, return_keys=["inputs"])
    assert list(only) == ["inputs"]


def test_inpainting_layout_with_a_mask_channel():
    unet = copy.deepcopy(UNET_PLAIN)
    unet["params"]["in_channels"] = 9  # latent 4 + masked-image latent 4 + mask 1
    model = instantiate_from_config({"target": LDM, "params": {
        "timesteps": 50, "log_every_t": 10, "first_stage_key": "image", "cond_stage_key": "masked_image",
        "concat_mask_key": "mask", "image_size": 8, "channels": 4, "concat_mode": True, "use_ema": False,
        "unet_config": unet, "first_stage_config": copy.deepcopy(TINY_KL),
        "cond_stage_config": "__is_first_stage__"}}).eval()
    batch = batch_of(2)
    batch["masked_image"] = batch["image"] * (1 - batch["mask"][..., None]) - batch["mask"][..., None]
    _, c = model.get_input(batch, "image")
    assert model.model.conditioning_key == "concat" and c.shape == (2, 5, 8, 8)
    assert set(c[:, -1].unique().tolist()) == {-1.0, 1.0}  # the {0, 1} mask is fed as {-1, 1}
    expected = torch.nn.functional.interpolate(batch["mask"][:, None] * 2 - 1, size=(8, 8))
    assert torch.equal(c[:, -1:], expected)
    loss, _ = model.shared_step(batch)
    assert torch.isfinite(loss)
    log = model.log_images(batch, N=2, ddim_steps=3, inpaint=False, plot_progressive_rows=False,
                           plot_diffusion_rows=False)
    assert {"masked_image", "inpainting_mask", "conditioning", "samples"} <= set(log)
    assert log["samples"].shape == (2, 3, 16, 16)


def test_pixel_space_ddpm():
    unet = copy.deepcopy(UNET_PLAIN)
    unet["params"].update(in_channels=3, out_channels=3)
    model = instantiate_from_config({"target": "ldm.models.diffusion.ddpm.DDPM", "params": {
        "unet_config": unet, "timesteps": 40, "image_size": 8, "channels": 3, "log_every_t": 10}})
    assert isinstance(model, DDPM) and model.clip_denoised and model.model.conditioning_key is None
    batch = {"image": torch.rand(2, 8, 8, 3) * 2 - 1}
    model.log_dict = model.log = lambda *a, **k: None
    loss = model.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    model.eval()
    log = model.log_images(batch, N=2)
    assert log["samples"].shape == (2, 3, 8, 8) and log["samples"].abs().max() <= 1.0 + 1e-6
    assert {"inputs", "diffusion_row", "denoise_row"} <= set(log)
    with pytest.raises(ValueError, match="learning_rate"):
        model.configure_optimizers()
    model.learning_rate = 1e-4
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)


def test_log_images_of_a_class_conditional_model_shows_class_names():
    model = make_ldm(timesteps=50, log_every_t=10, cond_stage_key="class_label", cond_stage_trainable=True,
                     cond_stage_config={"target": "ldm.modules.encoders.modules.ClassEmbedder",
                                        "params": {"embed_dim": 16, "n_classes": 3, "key": "class_label"}}).eval()
    batch = {"image": torch.randn(2, 8, 8, 4), "class_label": torch.tensor([0, 2]),
             "human_label": ["tench", "goldfish"]}
    log = model.log_images(batch, N=2, ddim_steps=2, inpaint=False, plot_progressive_rows=False,
                           plot_diffusion_rows=False)
    assert log["conditioning"].shape == (2, 3, 8, 8) and log["samples"].shape == (2, 4, 8, 8)
    assert not torch.equal(log["conditioning"][0], log["conditioning"][1])  # two different names drawn
    assert log["conditioning"].min() < 0 < log["conditioning"].max()  # dark text on white
