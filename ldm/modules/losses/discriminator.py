"""PatchGAN discriminator (Isola et al. 2017) and the adversarial pieces of the first-stage losses.

`NLayerDiscriminator` has the layout of taming-transformers' model (keys `main.{i}.*`), so the
`loss.discriminator.*` keys of released training checkpoints load. The functions below are
shared by `LPIPSWithDiscriminator` (KL) and `VQLPIPSWithDiscriminator` (VQ).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ActNorm(nn.Module):
    """Per-channel affine normalisation whose `loc`/`scale` are initialised from the first
    training batch (Glow's actnorm); `initialized` is a uint8 buffer as in the checkpoints.

    Args:
        num_features: channels.
        logdet: also return the log-determinant of the transform.
        affine: must be True (kept for the original signature).
        allow_reverse_init: allow data-dependent initialisation from `reverse`.
    """

    def __init__(self, num_features: int, logdet: bool = False, affine: bool = True,
                 allow_reverse_init: bool = False):
        super().__init__()
        if not affine:
            raise ValueError("ActNorm supports affine=True only")
        self.logdet = logdet
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.allow_reverse_init = allow_reverse_init
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set loc = -mean and scale = 1 / (std + 1e-6) per channel of `x`."""
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.loc.data.copy_(-flat.mean(1).view(1, -1, 1, 1))
        self.scale.data.copy_(1.0 / (flat.std(1).view(1, -1, 1, 1) + 1e-6))

    def forward(self, x: Tensor, reverse: bool = False):
        if reverse:
            return self.reverse(x)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[:, :, None, None]
        if self.training and self.initialized.item() == 0:
            self.initialize(x)
            self.initialized.fill_(1)
        h = self.scale * (x + self.loc)
        if squeeze:
            h = h.squeeze(-1).squeeze(-1)
        if self.logdet:
            logdet = x.shape[2] * x.shape[3] * torch.sum(torch.log(torch.abs(self.scale)))
            return h, logdet * torch.ones(x.shape[0]).to(x)
        return h

    def reverse(self, out: Tensor) -> Tensor:
        """Inverse transform."""
        if self.training and self.initialized.item() == 0:
            if not self.allow_reverse_init:
                raise RuntimeError("ActNorm: initializing in reverse direction is disabled")
            self.initialize(out)
            self.initialized.fill_(1)
        squeeze = out.ndim == 2
        if squeeze:
            out = out[:, :, None, None]
        h = out / self.scale - self.loc
        return h.squeeze(-1).squeeze(-1) if squeeze else h


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator: 4x4 convs, LeakyReLU(0.2), BatchNorm (or ActNorm); one logit per patch.

    Args:
        input_nc: input channels (3, or more with `disc_conditional`).
        ndf: filters of the first layer (doubled per layer, capped at 8 * ndf).
        n_layers: number of stride-2 layers.
        use_actnorm: ActNorm instead of BatchNorm2d (then the convs have biases).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, use_actnorm: bool = False):
        super().__init__()
        norm_layer = ActNorm if use_actnorm else nn.BatchNorm2d
        use_bias = use_actnorm  # BatchNorm has its own shift
        kw, padw = 4, 1
        sequence: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
                                     nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2,
                                   padding=padw, bias=use_bias),
                         norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1,
                               padding=padw, bias=use_bias),
                     norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True),
                     nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.main = nn.Sequential(*sequence)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def weights_init(m: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0."""
    classname = m.__class__.__name__
    if "Conv" in classname:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif "BatchNorm" in classname:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))."""
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


def vanilla_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """0.5 * (mean(softplus(-real)) + mean(softplus(fake))), the non-saturating GAN loss."""
    return 0.5 * (torch.mean(F.softplus(-logits_real)) + torch.mean(F.softplus(logits_fake)))


D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def adopt_weight(weight: float, global_step: int, threshold: int = 0, value: float = 0.0) -> float:
    """`value` before step `threshold`, `weight` from then on (the discriminator warm-up)."""
    return value if global_step < threshold else weight


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float) -> Tensor:
    """Balance of the adversarial term (Esser et al. 2021, Eq. 7):
    ||grad nll|| / (||grad g_loss|| + 1e-4) at the decoder's last layer, clamped to [0, 1e4],
    detached, times `disc_weight`."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return torch.clamp(d_weight, 0.0, 1e4).detach() * disc_weight


def build_discriminator(disc_in_channels: int, disc_num_layers: int, use_actnorm: bool,
                        disc_ndf: int = 64) -> NLayerDiscriminator:
    """An `NLayerDiscriminator` with `weights_init` applied, as both losses build it."""
    return NLayerDiscriminator(input_nc=disc_in_channels, n_layers=disc_num_layers,
                               use_actnorm=use_actnorm, ndf=disc_ndf).apply(weights_init)


class AdversarialTerms(nn.Module):
    """The GAN half shared by the KL and VQ losses: owns `discriminator` (so its keys are
    `loss.discriminator.*` when mixed into a loss) and computes both players' terms.

    Subclasses call `_init_adversarial(...)` in their constructor.
    """

    def _init_adversarial(self, disc_start: int, disc_num_layers: int, disc_in_channels: int,
                          disc_factor: float, disc_weight: float, use_actnorm: bool,
                          disc_conditional: bool, disc_loss: str, disc_ndf: int = 64) -> None:
        if disc_loss not in D_LOSSES:
            raise ValueError(f"disc_loss must be one of {sorted(D_LOSSES)}, got {disc_loss!r}")
        self.discriminator = build_discriminator(disc_in_channels, disc_num_layers, use_actnorm, disc_ndf)
        self.discriminator_iter_start = disc_start
        self.disc_loss = D_LOSSES[disc_loss]
        self.disc_factor = disc_factor
        self.discriminator_weight = disc_weight
        self.disc_conditional = disc_conditional

    def _logits(self, x: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            if self.disc_conditional:
                raise ValueError("disc_conditional=True needs `cond`")
            return self.discriminator(x.contiguous())
        if not self.disc_conditional:
            raise ValueError("`cond` given but disc_conditional=False")
        return self.discriminator(torch.cat((x.contiguous(), cond), dim=1))

    def generator_terms(self, nll_loss: Tensor, reconstructions: Tensor, global_step: int,
                        last_layer: Tensor | None, cond: Tensor | None) -> tuple[Tensor, Tensor, float]:
        """(g_loss, d_weight, disc_factor) for the autoencoder update.

        The adaptive weight needs gradients; outside training (no grad, or no `last_layer`)
        it is 0, which is what the original's try/except amounts to. Before `disc_start` the
        factor is 0: the weight is not computed (it would be multiplied by 0) and g_loss, which
        the loss multiplies by 0, is computed without a graph, so that the warm-up steps do not
        backpropagate through the discriminator (same values and updates, less compute).
        """
        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.discriminator_iter_start)
        if disc_factor == 0.0:  # warm-up: g_loss only for the log, no graph through the discriminator
            with torch.no_grad():
                g_loss = -torch.mean(self._logits(reconstructions, cond))
            return g_loss, torch.zeros((), device=g_loss.device), disc_factor
        g_loss = -torch.mean(self._logits(reconstructions, cond))
        can_grad = (last_layer is not None and torch.is_grad_enabled() and last_layer.requires_grad
                    and nll_loss.requires_grad and g_loss.requires_grad)
        if self.disc_factor > 0.0 and can_grad:
            d_weight = adaptive_weight(nll_loss, g_loss, last_layer, self.discriminator_weight)
        else:
            d_weight = torch.zeros((), device=g_loss.device)
        return g_loss, d_weight, disc_factor

    def discriminator_terms(self, inputs: Tensor, reconstructions: Tensor, global_step: int,
                            cond: Tensor | None, split: str) -> tuple[Tensor, dict[str, Tensor]]:
        """(d_loss, log) for the discriminator update; d_loss is 0 before `disc_start` (and then
        costs no backward pass through the discriminator)."""
        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.discriminator_iter_start)
        if disc_factor == 0.0 and torch.is_grad_enabled():
            # warm-up: the loss is 0 * (...), so its gradients are zeros; compute the logits for
            # the log without a graph and return a zero that reaches every parameter instead
            with torch.no_grad():
                logits_real = self._logits(inputs.detach(), cond)
                logits_fake = self._logits(reconstructions.detach(), cond)
            params = [p for p in self.discriminator.parameters() if p.requires_grad]
            d_loss = 0.0 * sum((p.view(-1)[:1].sum() for p in params), torch.zeros((), device=inputs.device))
        else:
            logits_real = self._logits(inputs.detach(), cond)
            logits_fake = self._logits(reconstructions.detach(), cond)
            d_loss = disc_factor * self.disc_loss(logits_real, logits_fake)
        log = {f"{split}/disc_loss": d_loss.clone().detach().mean(),
               f"{split}/logits_real": logits_real.detach().mean(),
               f"{split}/logits_fake": logits_fake.detach().mean()}
        return d_loss, log
