"""`DiffusionWrapper`: routes conditions into the denoising network.

The network lives at `diffusion_model` so that its weights keep the released checkpoints' key
`model.diffusion_model.*`. How conditions enter (Rombach et al. 2022, Sec. 3.3):

| conditioning_key | network call |
| --- | --- |
| None        | `net(x, t)` |
| "concat"    | `net(cat([x] + c_concat, dim=1), t)` |
| "crossattn" | `net(x, t, context=cat(c_crossattn, dim=1))` |
| "hybrid"    | `net(cat([x] + c_concat, dim=1), t, context=cat(c_crossattn, dim=1))` |
| "adm"       | `net(x, t, y=c_crossattn[0])` (class / vector conditioning) |
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ldm.util import instantiate_from_config

CONDITIONING_KEYS = (None, "concat", "crossattn", "hybrid", "adm")


class DiffusionWrapper(nn.Module):
    """The denoising network plus the rule that feeds it conditions.

    Args:
        diff_model_config: config of the network (usually `UNetModel`).
        conditioning_key: one of None, "concat", "crossattn", "hybrid", "adm" (see module doc).
    """

    def __init__(self, diff_model_config: Any, conditioning_key: str | None):
        super().__init__()
        if conditioning_key not in CONDITIONING_KEYS:
            raise ValueError(f"conditioning_key must be one of {CONDITIONING_KEYS}, got {conditioning_key!r}")
        self.diffusion_model = instantiate_from_config(diff_model_config)
        self.conditioning_key = conditioning_key

    def forward(self, x: Tensor, t: Tensor, c_concat: list[Tensor] | None = None,
                c_crossattn: list[Tensor] | None = None) -> Tensor:
        key = self.conditioning_key
        if key is None:
            return self.diffusion_model(x, t)
        if key == "concat":
            return self.diffusion_model(torch.cat([x] + list(c_concat), dim=1), t)
        if key == "crossattn":
            return self.diffusion_model(x, t, context=torch.cat(list(c_crossattn), 1))
        if key == "hybrid":
            xc = torch.cat([x] + list(c_concat), dim=1)
            return self.diffusion_model(xc, t, context=torch.cat(list(c_crossattn), 1))
        return self.diffusion_model(x, t, y=c_crossattn[0])  # "adm"
