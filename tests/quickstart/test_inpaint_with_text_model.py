"""The quickstart's inpainting (`ldm.quickstart.evaluation.inpaint_with_text_model`): mask-guided
DDIM, deterministic given its seed whatever eta, and the input kept outside the holes."""
from __future__ import annotations

import copy

import numpy as np
import torch

from ldm.quickstart.evaluation import inpaint_with_text_model
from tests.models.tiny import TINY_KL, make_ldm


def text_ldm():
    torch.manual_seed(0)
    return make_ldm(timesteps=50, cond_stage_key="caption", first_stage_config=copy.deepcopy(TINY_KL),
                    cond_stage_config={"target": "tests.models.test_sampling_and_logging.CaptionEncoder"}).eval()


def scenes(n: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((n, 16, 16), dtype=np.float32)
    masks[:, 4:12, 2:10] = 1.0
    return images, masks, ["a red circle", "a blue square to the left of a green star"][:n]


def test_inpainting_is_reproducible_with_noise_at_every_step_and_keeps_the_known_pixels():
    torch.set_num_threads(1)
    model = text_ldm()
    images, masks, captions = scenes()
    torch.manual_seed(123)
    state = torch.get_rng_state()

    first = inpaint_with_text_model(model, images, masks, captions, steps=4, scale=2.0, eta=1.0, seed=0)
    assert torch.equal(torch.get_rng_state(), state), "the caller's random state must be left as it was"
    again = inpaint_with_text_model(model, images, masks, captions, steps=4, scale=2.0, eta=1.0, seed=0)
    other_seed = inpaint_with_text_model(model, images, masks, captions, steps=4, scale=2.0, eta=1.0, seed=1)
    deterministic = inpaint_with_text_model(model, images, masks, captions, steps=4, scale=2.0, eta=0.0, seed=0)

    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    hole = masks.astype(bool)
    for out in (first, other_seed, deterministic):
        np.testing.assert_array_equal(out[~hole], images[~hole])
    # eta 1 draws fresh noise at every step: another seed, or no noise, fills the hole otherwise
    assert np.abs(first[hole].astype(int) - other_seed[hole].astype(int)).mean() > 1.0
    assert np.abs(first[hole].astype(int) - deterministic[hole].astype(int)).mean() > 1.0
