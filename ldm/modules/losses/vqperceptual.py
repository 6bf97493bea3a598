"""Training loss of the VQ autoencoders (VQGAN, Esser et al. 2021): pixel + LPIPS
reconstruction, codebook loss and a PatchGAN adversarial term.

The released VQ configs name `taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator`;
it resolves to this class through `ldm.util.TARGET_ALIASES`. The parameters are a superset of
taming's and of the original `ldm.modules.losses.vqperceptual` version.
"""
from __future__ import annotations

import torch
from torch import Tensor

# adopt_weight, hinge_d_loss, vanilla_d_loss: names the original module exported
from ldm.modules.losses.discriminator import (  # noqa: F401
    AdversarialTerms,
    adopt_weight,
    hinge_d_loss,
    vanilla_d_loss,
)
from ldm.modules.losses.lpips import LPIPS


class VQLPIPSWithDiscriminator(AdversarialTerms):
    """Loss of `VQModel`; `forward(..., optimizer_idx=0)` is the autoencoder's loss,
    `optimizer_idx=1` the discriminator's.

    Args:
        disc_start: global step from which the adversarial terms are on.
        codebook_weight: weight of the quantizer's codebook/commitment loss.
        pixelloss_weight: weight of the pixel term (stored but unused by the original; applied
            here, which is the same for the released value 1.0).
        disc_num_layers: stride-2 layers of the PatchGAN.
        disc_in_channels: discriminator input channels.
        disc_factor: weight of the adversarial terms once on.
        disc_weight: multiplier of the adaptive weight.
        perceptual_weight: weight of LPIPS; 0 builds no LPIPS at all (no VGG weights needed).
        use_actnorm: ActNorm instead of BatchNorm in the discriminator.
        disc_conditional: the discriminator also sees `cond` (concatenated on channels).
        disc_ndf: discriminator width.
        disc_loss: "hinge" or "vanilla".
        n_classes: codebook size, accepted for compatibility (usage is logged by the model).
        perceptual_loss: only "lpips" is available.
        pixel_loss: "l1" or "l2".
        lpips_vgg_path: VGG16 weights for LPIPS (see `ldm.modules.losses.lpips`).
        lpips_lin_path: LPIPS linear-head weights.
    """

    def __init__(self, disc_start: int, codebook_weight: float = 1.0, pixelloss_weight: float = 1.0,
                 disc_num_layers: int = 3, disc_in_channels: int = 3, disc_factor: float = 1.0,
                 disc_weight: float = 1.0, perceptual_weight: float = 1.0, use_actnorm: bool = False,
                 disc_conditional: bool = False, disc_ndf: int = 64, disc_loss: str = "hinge",
                 n_classes: int | None = None, perceptual_loss: str = "lpips", pixel_loss: str = "l1",
                 lpips_vgg_path: str | None = None, lpips_lin_path: str | None = None):
        super().__init__()
        if perceptual_loss != "lpips":
            raise ValueError(f"perceptual_loss must be 'lpips', got {perceptual_loss!r}")
        if pixel_loss not in ("l1", "l2"):
            raise ValueError(f"pixel_loss must be 'l1' or 'l2', got {pixel_loss!r}")
        self.codebook_weight = codebook_weight
        self.pixel_weight = pixelloss_weight
        self.pixel_loss = pixel_loss
        self.perceptual_weight = perceptual_weight
        self.perceptual_loss = (LPIPS(vgg_path=lpips_vgg_path, lin_path=lpips_lin_path).eval()
                                if perceptual_weight > 0 else None)
        self.n_classes = n_classes
        self._init_adversarial(disc_start, disc_num_layers, disc_in_channels, disc_factor, disc_weight,
                               use_actnorm, disc_conditional, disc_loss, disc_ndf)

    def forward(self, codebook_loss: Tensor, inputs: Tensor, reconstructions: Tensor,
                optimizer_idx: int, global_step: int, last_layer: Tensor | None = None,
                cond: Tensor | None = None, split: str = "train",
                predicted_indices: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, log dict with keys `{split}/...`) for the autoencoder (0) or discriminator (1).
        `predicted_indices` is accepted for the original signature and unused."""
        if optimizer_idx == 1:
            return self.discriminator_terms(inputs, reconstructions, global_step, cond, split)
        if optimizer_idx != 0:
            raise ValueError(f"optimizer_idx must be 0 or 1, got {optimizer_idx}")
        diff = inputs.contiguous() - reconstructions.contiguous()
        rec_loss = self.pixel_weight * (diff.abs() if self.pixel_loss == "l1" else diff.pow(2))
        if self.perceptual_loss is not None:
            p_loss = self.perceptual_loss(inputs.contiguous(), reconstructions.contiguous())
            rec_loss = rec_loss + self.perceptual_weight * p_loss
        else:
            p_loss = torch.zeros((), device=inputs.device)
        nll_loss = torch.mean(rec_loss)

        g_loss, d_weight, disc_factor = self.generator_terms(nll_loss, reconstructions, global_step,
                                                             last_layer, cond)
        loss = nll_loss + d_weight * disc_factor * g_loss + self.codebook_weight * codebook_loss.mean()
        log = {f"{split}/total_loss": loss.clone().detach().mean(),
               f"{split}/quant_loss": codebook_loss.detach().mean(),
               f"{split}/nll_loss": nll_loss.detach().mean(),
               f"{split}/rec_loss": rec_loss.detach().mean(),
               f"{split}/p_loss": p_loss.detach().mean(),
               f"{split}/d_weight": d_weight.detach(),
               f"{split}/disc_factor": torch.tensor(float(disc_factor), device=loss.device),
               f"{split}/g_loss": g_loss.detach().mean()}
        return loss, log
