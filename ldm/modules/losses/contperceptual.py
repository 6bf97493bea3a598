"""Training loss of the KL autoencoders: L1 + LPIPS reconstruction as a Gaussian NLL with a
learned scalar log-variance, KL penalty, and a PatchGAN adversarial term (LDM paper, Sec. 3.1
and Appendix G)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ldm.modules.distributions.distributions import DiagonalGaussianDistribution
from ldm.modules.losses.discriminator import AdversarialTerms
from ldm.modules.losses.lpips import LPIPS


class LPIPSWithDiscriminator(AdversarialTerms):
    """Loss of `AutoencoderKL`; `forward(..., optimizer_idx=0)` is the autoencoder's loss,
    `optimizer_idx=1` the discriminator's.

    Args:
        disc_start: global step from which the adversarial terms are on.
        logvar_init: initial value of the learned scalar `logvar` (`loss.logvar`).
        kl_weight: weight of the KL term (1e-6 in the released configs).
        pixelloss_weight: weight of the L1 term (the original stores it but never applies it;
            here it is applied, which is the same for the released value 1.0).
        disc_num_layers: stride-2 layers of the PatchGAN.
        disc_in_channels: discriminator input channels.
        disc_factor: weight of the adversarial terms once on.
        disc_weight: multiplier of the adaptive weight.
        perceptual_weight: weight of LPIPS; 0 builds no LPIPS at all (no VGG weights needed).
        use_actnorm: ActNorm instead of BatchNorm in the discriminator.
        disc_conditional: the discriminator also sees `cond` (concatenated on channels).
        disc_loss: "hinge" or "vanilla".
        disc_ndf: discriminator width.
        pixel_loss: "l1" (released) or "l2".
        gradient_weight: weight of the same pixel loss on the error's horizontal and vertical
            differences (0, the released value, adds nothing). The pixel loss weights all spatial
            frequencies alike, so edges and thin parts, a small share of the pixels, are learned
            last; the differences weight the error at frequency w by 4 sin^2(w / 2), most at the
            highest. A stand-in for LPIPS's sharpening where no VGG16 weights can be had.
        lpips_vgg_path: VGG16 weights for LPIPS (see `ldm.modules.losses.lpips`).
        lpips_lin_path: LPIPS linear-head weights.
    """

    def __init__(self, disc_start: int, logvar_init: float = 0.0, kl_weight: float = 1.0,
                 pixelloss_weight: float = 1.0, disc_num_layers: int = 3, disc_in_channels: int = 3,
                 disc_factor: float = 1.0, disc_weight: float = 1.0, perceptual_weight: float = 1.0,
                 use_actnorm: bool = False, disc_conditional: bool = False, disc_loss: str = "hinge",
                 disc_ndf: int = 64, pixel_loss: str = "l1", lpips_vgg_path: str | None = None,
                 lpips_lin_path: str | None = None, gradient_weight: float = 0.0):
        super().__init__()
        if pixel_loss not in ("l1", "l2"):
            raise ValueError(f"pixel_loss must be 'l1' or 'l2', got {pixel_loss!r}")
        if gradient_weight < 0:
            raise ValueError(f"gradient_weight must be >= 0, got {gradient_weight}")
        self.kl_weight = kl_weight
        self.gradient_weight = gradient_weight
        self.pixel_weight = pixelloss_weight
        self.pixel_loss = pixel_loss
        self.perceptual_weight = perceptual_weight
        self.perceptual_loss = (LPIPS(vgg_path=lpips_vgg_path, lin_path=lpips_lin_path).eval()
                                if perceptual_weight > 0 else None)
        self.logvar = nn.Parameter(torch.ones(size=()) * logvar_init)
        self._init_adversarial(disc_start, disc_num_layers, disc_in_channels, disc_factor, disc_weight,
                               use_actnorm, disc_conditional, disc_loss, disc_ndf)

    def _pixel(self, diff: Tensor) -> Tensor:
        return diff.abs() if self.pixel_loss == "l1" else diff.pow(2)

    def reconstruction_loss(self, inputs: Tensor, reconstructions: Tensor) -> Tensor:
        """Per-pixel pixel loss (+ gradient_weight * the pixel loss of the error's differences)
        + perceptual_weight * LPIPS (broadcast), shape of `inputs`."""
        diff = inputs.contiguous() - reconstructions.contiguous()
        rec = self.pixel_weight * self._pixel(diff)
        if self.gradient_weight > 0:
            # differences along width and height, zero-padded back to the input's shape
            dx = nn.functional.pad(diff[..., :, 1:] - diff[..., :, :-1], (0, 1, 0, 0))
            dy = nn.functional.pad(diff[..., 1:, :] - diff[..., :-1, :], (0, 0, 0, 1))
            rec = rec + self.gradient_weight * (self._pixel(dx) + self._pixel(dy))
        if self.perceptual_loss is not None:
            rec = rec + self.perceptual_weight * self.perceptual_loss(inputs.contiguous(), reconstructions.contiguous())
        return rec

    def forward(self, inputs: Tensor, reconstructions: Tensor, posteriors: DiagonalGaussianDistribution,
                optimizer_idx: int, global_step: int, last_layer: Tensor | None = None,
                cond: Tensor | None = None, split: str = "train",
                weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, log dict with keys `{split}/...`) for the autoencoder (0) or discriminator (1)."""
        if optimizer_idx == 1:
            return self.discriminator_terms(inputs, reconstructions, global_step, cond, split)
        if optimizer_idx != 0:
            raise ValueError(f"optimizer_idx must be 0 or 1, got {optimizer_idx}")
        rec_loss = self.reconstruction_loss(inputs, reconstructions)
        nll_loss = rec_loss / torch.exp(self.logvar) + self.logvar
        weighted_nll_loss = nll_loss if weights is None else weights * nll_loss
        weighted_nll_loss = torch.sum(weighted_nll_loss) / weighted_nll_loss.shape[0]
        nll_loss = torch.sum(nll_loss) / nll_loss.shape[0]
        kl_loss = posteriors.kl()
        kl_loss = torch.sum(kl_loss) / kl_loss.shape[0]

        g_loss, d_weight, disc_factor = self.generator_terms(nll_loss, reconstructions, global_step,
                                                             last_layer, cond)
        loss = weighted_nll_loss + self.kl_weight * kl_loss + d_weight * disc_factor * g_loss
        log = {f"{split}/total_loss": loss.clone().detach().mean(),
               f"{split}/logvar": self.logvar.detach(),
               f"{split}/kl_loss": kl_loss.detach().mean(),
               f"{split}/nll_loss": nll_loss.detach().mean(),
               f"{split}/rec_loss": rec_loss.detach().mean(),
               f"{split}/d_weight": d_weight.detach(),
               f"{split}/disc_factor": torch.tensor(float(disc_factor), device=loss.device),
               f"{split}/g_loss": g_loss.detach().mean()}
        return loss, log


class DummyLoss(nn.Module):
    """A loss slot with no parameters. The released `inpainting_big` config names
    `ldm.modules.losses.contperceptual.DummyLoss`, which the original code never defined; it
    is used where a first stage is only ever run for inference."""

    def __init__(self):
        super().__init__()
