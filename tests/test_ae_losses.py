"""First-stage losses and GAN training: discriminator pieces, the warm-up (`disc_start`), the
adaptive weight, and real Lightning runs (alternating optimizers, accumulation, clipping,
a short run that lowers the reconstruction loss)."""
from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ldm.models.autoencoder import AutoencoderKL, VQModel
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution
from ldm.modules.losses import LPIPSWithDiscriminator, VQLPIPSWithDiscriminator
from ldm.modules.losses.discriminator import ActNorm, NLayerDiscriminator, adopt_weight, hinge_d_loss, vanilla_d_loss
from ldm.util import instantiate_from_config
from tests.test_lpips import write_lin_file, write_vgg16_file

pytestmark = [pytest.mark.filterwarnings("ignore:You called `self.log.*no logger configured"),
              pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode"),
              pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")]

DDCONFIG = dict(double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32,
                ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips_weights")
    return str(write_vgg16_file(d / "vgg16.pth")), str(write_lin_file(d / "vgg.pth"))


# ---- discriminator pieces ----------------------------------------------------------------------

def test_d_losses_and_warmup():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1 + 4) / 3)))
    expected = 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    torch.testing.assert_close(vanilla_d_loss(real, fake), expected)
    assert adopt_weight(1.0, 4, threshold=5) == 0.0 and adopt_weight(1.0, 5, threshold=5) == 1.0


def test_patchgan_layout_and_init():
    torch.manual_seed(0)
    disc = LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0).discriminator
    convs = {k: tuple(v.shape) for k, v in disc.state_dict().items() if k.endswith("weight") and v.ndim == 4}
    assert convs == {"main.0.weight": (64, 3, 4, 4), "main.2.weight": (128, 64, 4, 4),
                     "main.5.weight": (256, 128, 4, 4), "main.8.weight": (512, 256, 4, 4),
                     "main.11.weight": (1, 512, 4, 4)}
    assert "main.2.bias" not in disc.state_dict() and "main.3.running_mean" in disc.state_dict()
    assert abs(disc.main[8].weight.std().item() - 0.02) < 0.002
    assert abs(disc.main[3].weight.mean().item() - 1.0) < 0.01 and disc.main[3].bias.abs().sum() == 0
    assert disc(torch.randn(1, 3, 64, 64)).shape == (1, 1, 6, 6)


def test_actnorm_initialises_from_the_first_batch():
    torch.manual_seed(0)
    disc = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2, use_actnorm=True)
    assert "main.2.bias" in disc.state_dict() and disc.state_dict()["main.3.initialized"].dtype == torch.uint8
    norm = disc.main[3]
    assert isinstance(norm, ActNorm)
    x = torch.randn(4, 3, 32, 32) * 3 + 1
    h = disc.main[:3](x)
    out = norm(h)
    assert norm.initialized.item() == 1
    flat = out.transpose(0, 1).reshape(out.shape[1], -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(16), atol=1e-3, rtol=0)
    torch.testing.assert_close(norm.reverse(out), h, atol=1e-4, rtol=1e-4)


# ---- losses on a toy generator -----------------------------------------------------------------

class ToyGenerator(torch.nn.Module):
    """Reconstruction = conv(noise) so that `conv.weight` plays the decoder's last layer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _toy_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    posterior = DiagonalGaussianDistribution(torch.randn(2, 8, 4, 4, generator=g))
    return x, posterior


def _disc_grads(loss_module) -> list[torch.Tensor]:
    return [p.grad for p in loss_module.discriminator.parameters()]


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_no_discriminator_signal_before_disc_start_and_adaptive_weight_after(kind, lpips_files):
    torch.manual_seed(0)
    vgg, lin = lpips_files
    common = dict(disc_start=10, disc_num_layers=2, disc_weight=0.5, lpips_vgg_path=vgg, lpips_lin_path=lin)
    loss_fn = (LPIPSWithDiscriminator(kl_weight=1e-6, **common) if kind == "kl"
               else VQLPIPSWithDiscriminator(codebook_weight=1.0, **common))
    gen = ToyGenerator()
    x, posterior = _toy_batch()
    qloss = torch.tensor(0.3)

    def ae_loss(step, split="train"):
        xrec = gen(x)
        args = (x, xrec, posterior) if kind == "kl" else (qloss, x, xrec)
        return (*loss_fn(*args, 0, step, last_layer=gen.conv.weight, split=split), xrec)

    def d_loss(step, xrec):
        args = (x, xrec, posterior) if kind == "kl" else (qloss, x, xrec)
        return loss_fn(*args, 1, step, last_layer=gen.conv.weight)

    # before disc_start: the total is reconstruction (+ KL / codebook) only
    loss, log, xrec = ae_loss(step=9)
    rec = (x - xrec).abs() + loss_fn.perceptual_loss(x, xrec)
    if kind == "kl":
        expected = rec.sum() / 2 + 1e-6 * posterior.kl().sum() / 2
    else:
        expected = rec.mean() + 0.3
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert log["train/disc_factor"] == 0.0 and log["train/d_weight"] == 0.0
    with torch.no_grad():  # g_loss is still logged with its value during the warm-up
        torch.testing.assert_close(log["train/g_loss"], -loss_fn.discriminator(xrec).mean())
    loss.backward()
    # ... but the warm-up update builds no graph through the discriminator (no gradient at all)
    assert all(g is None for g in _disc_grads(loss_fn))
    dloss, dlog = d_loss(9, xrec)
    assert dloss.item() == 0.0 and set(dlog) == {"train/disc_loss", "train/logits_real", "train/logits_fake"}
    dloss.backward()
    assert all(g is None or g.abs().sum() == 0 for g in _disc_grads(loss_fn))

    # from disc_start on: finite positive adaptive weight, a real discriminator gradient
    loss_fn.discriminator.zero_grad(set_to_none=True)
    gen.zero_grad(set_to_none=True)
    loss, log, xrec = ae_loss(step=10)
    d_weight = log["train/d_weight"].item()
    assert math.isfinite(d_weight) and d_weight > 0 and log["train/disc_factor"] == 1.0
    extra = 1e-6 * log["train/kl_loss"] if kind == "kl" else qloss
    torch.testing.assert_close(loss.detach(), log["train/nll_loss"] + extra + log["train/d_weight"] * log["train/g_loss"])
    dloss, _ = d_loss(10, xrec)
    assert dloss.item() > 0
    dloss.backward()
    assert sum(g.abs().sum() for g in _disc_grads(loss_fn)) > 0
    assert gen.conv.weight.grad is None  # the discriminator loss does not reach the generator

    # without gradients (validation) the weight is 0 instead of an error
    with torch.no_grad():
        _, log, _ = ae_loss(step=10, split="val")
    assert log["val/d_weight"] == 0.0 and "val/rec_loss" in log


def test_perceptual_weight_zero_needs_no_vgg(monkeypatch, tmp_path):
    monkeypatch.setenv("LDM_VGG16_WEIGHTS", str(tmp_path / "missing.pth"))  # would fail if used
    loss_fn = instantiate_from_config({"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                                       "params": {"disc_start": 0, "perceptual_weight": 0.0}})
    assert loss_fn.perceptual_loss is None and not any("perceptual" in k for k in loss_fn.state_dict())
    with pytest.raises(Exception, match="missing.pth"):
        LPIPSWithDiscriminator(disc_start=0)


def test_conditional_discriminator_and_bad_options(lpips_files):
    loss_fn = LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, disc_conditional=True, disc_in_channels=4)
    gen = ToyGenerator()
    x, posterior = _toy_batch()
    cond = torch.randn(2, 1, 32, 32)
    loss, _ = loss_fn(x, gen(x), posterior, 0, 0, last_layer=gen.conv.weight, cond=cond)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="cond"):
        loss_fn(x, gen(x), posterior, 0, 0, last_layer=gen.conv.weight)
    with pytest.raises(ValueError, match="disc_loss"):
        LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, disc_loss="wgan")
    with pytest.raises(ValueError, match="pixel_loss"):
        VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, pixel_loss="l3")


@pytest.mark.parametrize("pixel_loss", ["l1", "l2"])
def test_gradient_weight_adds_the_pixel_loss_of_the_error_differences(pixel_loss):
    torch.manual_seed(0)
    x, xrec = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    plain = LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, pixel_loss=pixel_loss)
    sharp = LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, pixel_loss=pixel_loss, gradient_weight=2.5)
    e = x - xrec
    f = (lambda t: t.abs()) if pixel_loss == "l1" else (lambda t: t.pow(2))
    expected = f(e).clone()
    expected[..., :, :-1] += 2.5 * f(e[..., :, 1:] - e[..., :, :-1])   # last column: no right neighbour
    expected[..., :-1, :] += 2.5 * f(e[..., 1:, :] - e[..., :-1, :])   # last row: no lower neighbour
    torch.testing.assert_close(sharp.reconstruction_loss(x, xrec), expected)
    torch.testing.assert_close(plain.reconstruction_loss(x, xrec), f(e))
    # a constant error has no differences: the term adds nothing; an edge shifted by one pixel does
    flat = torch.zeros(1, 1, 4, 4)
    torch.testing.assert_close(sharp.reconstruction_loss(flat + 0.3, flat), plain.reconstruction_loss(flat + 0.3, flat))
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1.0
    shifted = torch.zeros(1, 1, 4, 4)
    shifted[..., 3:] = 1.0
    assert sharp.reconstruction_loss(step, shifted).sum() > plain.reconstruction_loss(step, shifted).sum()
    with pytest.raises(ValueError, match="gradient_weight"):
        LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, gradient_weight=-1.0)


# ---- Lightning training ------------------------------------------------------------------------

class ImageFolder(Dataset):
    """Reads the PNGs of a folder as {'image': HWC float32 in [-1, 1]} (the data-set layout)."""

    def __init__(self, root: Path):
        self.paths = sorted(root.glob("*.png"))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        arr = np.asarray(Image.open(self.paths[i]).convert("RGB"), dtype=np.float32)
        return {"image": arr / 127.5 - 1.0}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Eight smooth 32x32 images (blurred colour noise)."""
    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    for i in range(8):
        x = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=32, mode="bicubic", align_corners=False)
        arr = (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(root / f"{i:02d}.png")
    return root


def _trainer(max_steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, callbacks=list(callbacks), **kwargs)


class StepRecorder(pl.Callback):
    """Records, at every optimizer step, which optimizer steps and its gradient norm."""

    def __init__(self):
        self.steps: list[dict] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        disc_params = set(map(id, pl_module.loss.discriminator.parameters()))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        which = "disc" if id(params[0]) in disc_params else "ae"
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.norm(torch.stack([g.norm() for g in grads])).item() if grads else 0.0
        self.steps.append({"which": which, "loss_step": pl_module.loss_step, "grad_norm": norm,
                           "disc_weight": pl_module.loss.discriminator.main[0].weight.detach().clone()})


def test_trainer_alternates_optimizers_and_honours_disc_start(image_folder, lpips_files):
    vgg, lin = lpips_files
    torch.manual_seed(0)
    model = AutoencoderKL(ddconfig=DDCONFIG, embed_dim=4, lossconfig={
        "target": "ldm.modules.losses.LPIPSWithDiscriminator",
        "params": {"disc_start": 2, "kl_weight": 1e-6, "disc_weight": 0.5, "disc_num_layers": 2,
                   "disc_ndf": 16, "lpips_vgg_path": vgg, "lpips_lin_path": lin}})
    model.learning_rate = 1e-4
    recorder = StepRecorder()
    loader = DataLoader(ImageFolder(image_folder), batch_size=2)
    _trainer(max_steps=8, callbacks=[recorder]).fit(model, loader)  # 4 batches x 2 optimizers

    assert [s["which"] for s in recorder.steps] == ["ae", "disc"] * 4
    assert [s["loss_step"] for s in recorder.steps] == [0, 0, 1, 1, 2, 2, 3, 3]
    disc_steps = [s for s in recorder.steps if s["which"] == "disc"]
    # before disc_start (loss steps 0, 1) the discriminator gets no gradient, after it does
    assert disc_steps[0]["grad_norm"] == 0.0 and disc_steps[1]["grad_norm"] == 0.0
    assert disc_steps[2]["grad_norm"] > 0 and disc_steps[3]["grad_norm"] > 0
    first_weight = disc_steps[0]["disc_weight"]
    assert torch.equal(disc_steps[2]["disc_weight"], first_weight)  # unchanged until then
    assert not torch.equal(model.loss.discriminator.main[0].weight.detach(), first_weight)
    metrics = model.trainer.callback_metrics
    for key in ("aeloss", "discloss", "train/aeloss", "train/discloss", "train/rec_loss", "train/kl_loss",
                "train/nll_loss", "train/g_loss", "train/disc_loss", "train/logits_real", "train/logvar"):
        assert key in metrics, key
    assert metrics["train/disc_factor"] == 1.0
    d_weight = metrics["train/d_weight"].item()
    assert math.isfinite(d_weight) and d_weight > 0
    assert model.trainer.global_step == 8


def test_accumulation_and_clipping(image_folder):
    torch.manual_seed(0)
    model = VQModel(ddconfig={**DDCONFIG, "double_z": False, "z_channels": 3}, n_embed=32, embed_dim=3,
                    accumulate_grad_batches=2, gradient_clip_val=1e-3, use_ema=True, lossconfig={
                        "target": "ldm.modules.losses.VQLPIPSWithDiscriminator",
                        "params": {"disc_start": 0, "perceptual_weight": 0.0, "disc_num_layers": 2,
                                   "disc_ndf": 16}})
    model.learning_rate = 1e-4
    recorder = StepRecorder()
    loader = DataLoader(ImageFolder(image_folder), batch_size=1)  # 8 batches -> 4 steps each
    val_loader = DataLoader(ImageFolder(image_folder), batch_size=4)
    _trainer(max_steps=100, max_epochs=1, callbacks=[recorder]).fit(model, loader, val_loader)
    assert [s["which"] for s in recorder.steps] == ["ae", "disc"] * 4
    assert all(s["grad_norm"] <= 1e-3 * (1 + 1e-4) for s in recorder.steps)
    assert all(s["grad_norm"] > 0 for s in recorder.steps)
    metrics = model.trainer.callback_metrics
    assert "train/perplexity" in metrics and "train/codebook_usage" in metrics
    assert 0 < metrics["train/codebook_usage"].item() <= 1
    assert "val/rec_loss" in metrics and "val_ema/rec_loss" in metrics  # EMA weights validated too
    assert model.model_ema.num_updates.item() == 8  # one EMA update per batch


def test_lightning_refuses_trainer_accumulation_under_manual_optimization(image_folder):
    model = AutoencoderKL(ddconfig=DDCONFIG, embed_dim=4, lossconfig={
        "target": "ldm.modules.losses.LPIPSWithDiscriminator", "params": {"disc_start": 0, "perceptual_weight": 0}})
    model.learning_rate = 1e-4
    with pytest.raises(Exception, match="accumulation"):
        _trainer(max_steps=2, accumulate_grad_batches=2).fit(model, DataLoader(ImageFolder(image_folder)))


@torch.no_grad()
def _mean_rec_loss(model, loader) -> float:
    model.eval()
    losses = [(model(model.get_input(b, "image"), sample_posterior=False)[0] - model.get_input(b, "image")).abs().mean()
              for b in loader]
    return torch.stack(losses).mean().item()


def test_short_training_run_lowers_the_reconstruction_loss(image_folder):
    torch.manual_seed(0)
    model = AutoencoderKL(ddconfig=DDCONFIG, embed_dim=4, lossconfig={
        "target": "ldm.modules.losses.LPIPSWithDiscriminator",
        "params": {"disc_start": 10_000, "kl_weight": 1e-6, "perceptual_weight": 0.0, "disc_num_layers": 2,
                   "disc_ndf": 16}})
    model.learning_rate = 1e-3
    loader = DataLoader(ImageFolder(image_folder), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(ImageFolder(image_folder), batch_size=4)
    before = _mean_rec_loss(model, val_loader)
    model.train()
    trainer = _trainer(max_steps=2 * 30, check_val_every_n_epoch=15)
    trainer.fit(model, loader, val_loader)
    after = _mean_rec_loss(model, val_loader)
    assert after < 0.6 * before, (before, after)
    assert "val/rec_loss" in trainer.callback_metrics and "val/aeloss" in trainer.callback_metrics


def test_lr_schedule_steps_both_optimizers(image_folder):
    torch.manual_seed(0)
    model = VQModel(ddconfig={**DDCONFIG, "double_z": False, "z_channels": 3}, n_embed=16, embed_dim=3,
                    lr_g_factor=2.0,
                    scheduler_config={"target": "ldm.lr_scheduler.LambdaLinearScheduler",
                                      "params": {"warm_up_steps": [4], "f_start": [0.0], "f_max": [1.0],
                                                 "f_min": [1.0], "cycle_lengths": [1000]}},
                    lossconfig={"target": "ldm.modules.losses.VQLPIPSWithDiscriminator",
                                "params": {"disc_start": 0, "perceptual_weight": 0.0, "disc_num_layers": 2,
                                           "disc_ndf": 16}})
    model.learning_rate = 1e-4
    _trainer(max_steps=4).fit(model, DataLoader(ImageFolder(image_folder), batch_size=4))  # 2 batches
    opt_ae, opt_disc = model.optimizers()
    f = model.trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0](2)  # multiplier after 2 steps
    assert f == pytest.approx(0.5)
    assert opt_ae.param_groups[0]["lr"] == pytest.approx(2e-4 * f)
    assert opt_disc.param_groups[0]["lr"] == pytest.approx(1e-4 * f)


def test_budget_lr_decays_both_gan_optimizers_over_the_budget(image_folder):
    """The quickstart autoencoder's schedule: `BudgetLRDecay` over a step budget that Lightning
    counts in steps of both optimizers; the AE (lr * lr_g_factor) and the discriminator follow it."""
    from ldm.callbacks.budget_lr import BudgetLRDecay, budget_lr_factor

    torch.manual_seed(0)
    model = AutoencoderKL(ddconfig=DDCONFIG, embed_dim=4, lr_g_factor=2.0, lossconfig={
        "target": "ldm.modules.losses.LPIPSWithDiscriminator",
        "params": {"disc_start": 100001, "kl_weight": 1e-6, "perceptual_weight": 0.0, "pixel_loss": "l2",
                   "gradient_weight": 6.0, "disc_num_layers": 2, "disc_ndf": 16}})
    model.learning_rate = 1e-3

    class Rates(pl.Callback):
        def __init__(self):
            self.rows = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            opt_ae, opt_disc = trainer.optimizers
            self.rows.append((trainer.global_step, opt_ae.param_groups[0]["lr"], opt_disc.param_groups[0]["lr"]))

    rates = Rates()  # runs after BudgetLRDecay's hook: callbacks run in list order
    _trainer(max_steps=16, callbacks=[BudgetLRDecay(decay_start=0.5, final_factor=0.02), rates]).fit(
        model, DataLoader(ImageFolder(image_folder), batch_size=1))  # 8 updates of both optimizers
    assert [r[0] for r in rates.rows] == list(range(0, 16, 2))
    for step, lr_ae, lr_disc in rates.rows:
        f = budget_lr_factor(step / 16, decay_start=0.5, final_factor=0.02)
        assert lr_ae == pytest.approx(2e-3 * f) and lr_disc == pytest.approx(1e-3 * f)
    assert rates.rows[3][1] == pytest.approx(2e-3) and rates.rows[-1][1] < 0.2 * 2e-3
