"""Vector quantizer of the VQ autoencoders (VQ-VAE bottleneck, van den Oord et al. 2017).

Our own implementation of the interface and math of taming-transformers' `VectorQuantizer2`,
which the released VQ configs name (`taming.modules.vqvae.quantize.VectorQuantizer2` resolves
here through `ldm.util.TARGET_ALIASES`). The codebook is the parameter `embedding.weight`
[n_e, e_dim], as in the released checkpoints.

It also counts how often each code is chosen (`code_counts`, a non-persistent buffer that
`reset_usage()` clears) and reports the batch perplexity: dead codes are the usual VQ failure.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def codebook_perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the code distribution given by `counts`: n when n codes are used equally."""
    probs = counts.float() / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-10))).sum()
    return entropy.exp()


class VectorQuantizer2(nn.Module):
    """Nearest-codebook-entry quantization with a commitment loss and straight-through gradients.

    Args:
        n_e: number of codebook entries.
        e_dim: dimension of each entry (the latent channels).
        beta: commitment weight. `legacy=True` (the released models) computes
            `mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)`, i.e. beta weighs the
            codebook term; `legacy=False` puts beta on the commitment term as in the paper.
        remap: path of a `.npy` array of used code indices; indices are then reported in that
            reduced set (codes outside it become `unknown_index`).
        unknown_index: "random", "extra" (one extra index) or an int, for `remap`.
        sane_index_shape: return indices as [B, H, W] instead of flat [B*H*W].
        legacy: see `beta`.
    """

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, remap: str | None = None,
                 unknown_index: str | int = "random", sane_index_shape: bool = False,
                 legacy: bool = True):
        super().__init__()
        self.n_e = n_e
        self.e_dim = e_dim
        self.beta = beta
        self.legacy = legacy
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

        self.remap = remap
        if remap is not None:
            self.register_buffer("used", torch.tensor(np.load(remap)))
            self.re_embed = self.used.shape[0]
            if unknown_index == "extra":
                unknown_index = self.re_embed
                self.re_embed += 1
            elif unknown_index != "random" and not isinstance(unknown_index, int):
                raise ValueError(f"unknown_index must be 'random', 'extra' or an int, got {unknown_index!r}")
            self.unknown_index = unknown_index
            logger.info("Remapping %d indices to %d indices. Using %s for unknown indices.",
                        n_e, self.re_embed, unknown_index)
        else:
            self.re_embed = n_e
            self.unknown_index = unknown_index
        self.sane_index_shape = sane_index_shape
        self.register_buffer("code_counts", torch.zeros(n_e, dtype=torch.long), persistent=False)

    # ---- remapping -----------------------------------------------------------------------------

    def remap_to_used(self, inds: Tensor) -> Tensor:
        """Codebook indices [B, ...] -> positions in `used` (unknown codes -> `unknown_index`)."""
        ishape = inds.shape
        inds = inds.reshape(ishape[0], -1)
        used = self.used.to(inds)
        match = (inds[:, :, None] == used[None, None, ...]).long()
        new = match.argmax(-1)
        unknown = match.sum(2) < 1
        if self.unknown_index == "random":
            new[unknown] = torch.randint(0, self.re_embed, size=new[unknown].shape, device=new.device)
        else:
            new[unknown] = self.unknown_index
        return new.reshape(ishape)

    def unmap_to_all(self, inds: Tensor) -> Tensor:
        """Positions in `used` [B, ...] -> codebook indices (the extra index maps to code 0)."""
        ishape = inds.shape
        inds = inds.reshape(ishape[0], -1).clone()
        used = self.used.to(inds)
        if self.re_embed > used.shape[0]:
            inds[inds >= used.shape[0]] = 0
        return used[inds].reshape(ishape)

    # ---- quantization --------------------------------------------------------------------------

    def nearest_codes(self, z_flat: Tensor) -> Tensor:
        """Index of the nearest codebook row (squared L2, first minimum on ties) per row of z_flat."""
        weight = self.embedding.weight
        d = (z_flat.pow(2).sum(dim=1, keepdim=True) + weight.pow(2).sum(dim=1)
             - 2 * z_flat @ weight.t())
        return torch.argmin(d, dim=1)

    def forward(self, z: Tensor, temp: float | None = None, rescale_logits: bool = False,
                return_logits: bool = False) -> tuple[Tensor, Tensor, tuple[Any, Any, Tensor]]:
        """z [B, C, H, W] -> (z_q, loss, (perplexity, None, indices)).

        `temp`, `rescale_logits`, `return_logits` exist for interface compatibility with the
        Gumbel quantizer and must keep their defaults.
        """
        if temp not in (None, 1.0) or rescale_logits or return_logits:
            raise ValueError("VectorQuantizer2 has no temperature or logits (Gumbel-only options)")
        if z.ndim != 4 or z.shape[1] != self.e_dim:
            raise ValueError(f"expected latents of shape [B, {self.e_dim}, H, W], got {list(z.shape)}")
        z = z.permute(0, 2, 3, 1).contiguous()
        z_flat = z.view(-1, self.e_dim)
        indices = self.nearest_codes(z_flat)
        z_q = self.embedding(indices).view(z.shape)

        if self.legacy:
            loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        else:
            loss = self.beta * torch.mean((z_q.detach() - z) ** 2) + torch.mean((z_q - z.detach()) ** 2)

        z_q = z + (z_q - z).detach()  # straight-through estimator
        z_q = z_q.permute(0, 3, 1, 2).contiguous()

        with torch.no_grad():
            counts = torch.bincount(indices, minlength=self.n_e)
            if self.training:
                self.code_counts += counts
            perplexity = codebook_perplexity(counts)

        if self.remap is not None:
            indices = self.remap_to_used(indices.reshape(z.shape[0], -1)).reshape(-1, 1)
        if self.sane_index_shape:
            indices = indices.reshape(z_q.shape[0], z_q.shape[2], z_q.shape[3])
        return z_q, loss, (perplexity, None, indices)

    def get_codebook_entry(self, indices: Tensor, shape: tuple[int, int, int, int] | None) -> Tensor:
        """Codebook rows for `indices`; with `shape` = (B, H, W, C) returned as [B, C, H, W]."""
        if self.remap is not None:
            indices = self.unmap_to_all(indices.reshape(shape[0], -1)).reshape(-1)
        z_q = self.embedding(indices)
        if shape is not None:
            z_q = z_q.view(shape).permute(0, 3, 1, 2).contiguous()
        return z_q

    # ---- usage statistics ----------------------------------------------------------------------

    def usage(self) -> dict[str, float]:
        """Codebook usage since the last `reset_usage()` (training batches only): the fraction
        of codes chosen at least once and the perplexity of the code distribution."""
        counts = self.code_counts
        return {"codebook_usage": (counts > 0).float().mean().item(),
                "perplexity": codebook_perplexity(counts).item()}

    def reset_usage(self) -> None:
        """Clear the usage counts (VQModel does this at the start of every training epoch)."""
        self.code_counts.zero_()

