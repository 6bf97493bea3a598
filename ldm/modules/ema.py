"""Exponential moving average of a module's trainable parameters (`LitEma`).

The shadows are buffers, so they travel with the model's state dict under the released
layout: `model_ema.decay`, `model_ema.num_updates` and one buffer per trainable parameter
named with the dots removed (`diffusion_model.input_blocks.0.0.weight` ->
`model_ema.diffusion_modelinput_blocks00weight`).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class LitEma(nn.Module):
    """EMA of `model`'s parameters that require grad.

    Args:
        model: the module whose parameters are averaged.
        decay: the EMA decay (upper bound when warm-up is on).
        use_num_upates: warm-up `decay_t = min(decay, (1 + n) / (10 + n))` with n the number of
            updates so far. (The original's spelling, kept so that configs and calls match.)
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, use_num_upates: bool = True):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"LitEma: decay must be between 0 and 1, got {decay}")
        self.m_name2s_name: dict[str, str] = {}
        self.register_buffer("decay", torch.tensor(decay, dtype=torch.float32))
        self.register_buffer(
            "num_updates", torch.tensor(0 if use_num_upates else -1, dtype=torch.int)
        )
        for name, p in model.named_parameters():
            if p.requires_grad:
                s_name = name.replace(".", "")
                if s_name in self.m_name2s_name.values():
                    raise ValueError(f"LitEma: parameter names collide once dots are removed: {name}")
                self.m_name2s_name[name] = s_name
                self.register_buffer(s_name, p.detach().clone().data)
        self.collected_params: list[torch.Tensor] = []

    def reset_num_updates(self) -> None:
        """Restart the warm-up (used when fine-tuning from an EMA checkpoint)."""
        del self.num_updates
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int))

    @torch.no_grad()
    def forward(self, model: nn.Module) -> None:
        """One EMA update: `shadow -= (1 - decay_t) * (shadow - param)`."""
        decay = self.decay
        if self.num_updates >= 0:
            self.num_updates += 1
            decay = torch.minimum(decay, (1 + self.num_updates) / (10 + self.num_updates))
        one_minus_decay = 1.0 - decay
        shadows = dict(self.named_buffers())
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if name not in self.m_name2s_name:
                raise KeyError(f"LitEma: parameter '{name}' was not trainable when the EMA was built")
            shadow = shadows[self.m_name2s_name[name]]
            shadow.sub_(one_minus_decay.to(shadow.dtype) * (shadow - param.to(shadow.dtype)))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the EMA weights into `model` (trainable parameters only)."""
        shadows = dict(self.named_buffers())
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.data.copy_(shadows[self.m_name2s_name[name]].data)

    def store(self, parameters: Iterable[torch.Tensor]) -> None:
        """Save the current parameters, to be brought back by `restore`."""
        self.collected_params = [p.detach().clone() for p in parameters]

    def restore(self, parameters: Iterable[torch.Tensor]) -> None:
        """Bring back the parameters saved by `store` (after validating with EMA weights)."""
        for saved, param in zip(self.collected_params, parameters):
            param.data.copy_(saved.data)
        self.collected_params = []
