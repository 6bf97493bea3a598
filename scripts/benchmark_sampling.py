#!/usr/bin/env python
"""Sampler benchmark: seconds per image and how far each sampler lands, in latent L2, from a
1000-step DDIM (eta 0) reference started from the same noise.

    python scripts/benchmark_sampling.py --config CONFIG --ckpt CKPT --prompt "a red circle" --scale 3
    python scripts/benchmark_sampling.py --tiny       # random tiny LDM: timing and plumbing only
    python scripts/benchmark_sampling.py --analytic   # Gaussian data, exact denoiser: accuracy only

Rows are `name:steps` (--samplers); names: ddim, plms, dpm_solver (the SD tree's time-uniform
DPM-Solver++(2M)), dpm_solver_logsnr (log-SNR steps), dpmpp_2m_karras, euler_a (stochastic: its
distance to the deterministic reference is not a solver error). Times cover sampling only (no
decoding), after one warm-up call, fastest of --repeats, and include classifier-free guidance
when --scale != 1.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ldm.sampling_utils import (  # noqa: E402
    ArgumentParser,
    ScriptError,
    ema_scope,
    load_config,
    load_model,
    make_sampler,
    pick_device,
    run_script,
    seed_everything,
)

DEFAULT_ROWS = "ddim:50,plms:50,dpm_solver:20,dpm_solver_logsnr:20,dpmpp_2m_karras:20,euler_a:50"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="config of a trained model")
    p.add_argument("--ckpt", default=None, help="checkpoint of a trained model")
    p.add_argument("--tiny", action="store_true", help="use a random tiny LDM (no checkpoint needed)")
    p.add_argument("--analytic", action="store_true", help="use Gaussian data with its exact denoiser")
    p.add_argument("--samplers", default=DEFAULT_ROWS, help="comma-separated name:steps rows")
    p.add_argument("--ref_steps", type=int, default=1000, help="DDIM steps of the reference")
    p.add_argument("--n", type=int, default=4, help="images per sampler call (the batch)")
    p.add_argument("--H", type=int, default=None, help="latent height (default: the model's image_size)")
    p.add_argument("--W", type=int, default=None, help="latent width (default: the model's image_size)")
    p.add_argument("--prompt", default="a red circle above a blue square", help="prompt for text models")
    p.add_argument("--scale", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--repeats", type=int, default=1, help="time each row this often, report the fastest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    return p


class GaussianDataModel:
    """x0 ~ N(mu, s^2) per element: E[eps | x_t] = sqrt(1-a) (x - sqrt(a) mu) / (a s^2 + 1 - a).

    A LatentDiffusion stand-in (SD-v1 schedule) whose probability-flow ODE is exact and cheap.
    """

    parameterization = "eps"
    cond_stage_model = None

    def __init__(self, mu: float = 0.3, std: float = 0.5, image_size: int = 32, channels: int = 4) -> None:
        from ldm.modules.diffusionmodules.util import make_beta_schedule

        betas = make_beta_schedule("linear", 1000, 0.00085, 0.012)
        ac = np.cumprod(1 - betas)
        self.betas = torch.tensor(betas, dtype=torch.float32)
        self.alphas_cumprod = torch.tensor(ac, dtype=torch.float32)
        self.alphas_cumprod_prev = torch.tensor(np.append(1.0, ac[:-1]), dtype=torch.float32)
        self.num_timesteps, self.mu, self.std = 1000, mu, std
        self.image_size, self.channels = image_size, channels

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        t = t.double().clamp(0, 999)
        lo = t.floor().long().clamp(max=998)
        ac = self.alphas_cumprod.double()
        a = (ac[lo] * (1 - (t - lo)) + ac[lo + 1] * (t - lo)).reshape(-1, *([1] * (x.ndim - 1)))
        return ((1 - a).sqrt() * (x.double() - a.sqrt() * self.mu) / (a * self.std**2 + 1 - a)).to(x.dtype)


def tiny_model():
    """A random LatentDiffusion like the golden sampler fixtures (crossattn, identity first stage)."""
    from omegaconf import OmegaConf

    from ldm.util import instantiate_from_config

    unet = {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
            "params": {"image_size": 16, "in_channels": 4, "out_channels": 4, "model_channels": 64,
                       "attention_resolutions": [2], "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 4,
                       "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 32, "legacy": False}}
    config = OmegaConf.create({"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "first_stage_key": "image",
        "cond_stage_key": "caption", "image_size": 16, "channels": 4, "conditioning_key": "crossattn",
        "scale_factor": 1.0, "use_ema": False, "unet_config": unet,
        "first_stage_config": {"target": "ldm.models.autoencoder.IdentityFirstStage"},
        "cond_stage_config": {"target": "torch.nn.Identity"}}})
    torch.manual_seed(0)
    model = instantiate_from_config(config)
    with torch.no_grad():  # zero-initialised output layers would make eps identically 0
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.02)
    return model.eval()


def conditioning(model, opt, n: int, device) -> tuple:
    """(c, uc) for a batch of n: none, a fixed random context (tiny), text, or class labels."""
    if opt.analytic or model.cond_stage_model is None:
        return None, None
    if opt.tiny:
        g = torch.Generator().manual_seed(opt.seed)
        c = torch.randn(n, 5, 32, generator=g).to(device)
        return c, (torch.zeros_like(c) if opt.scale != 1 else None)
    key = model.cond_stage_key
    if key in ("caption", "txt"):
        c = model.get_learned_conditioning(n * [opt.prompt])
        return c, (model.get_learned_conditioning(n * [""]) if opt.scale != 1 else None)
    if key == "class_label":
        labels = torch.arange(n, device=device) % int(getattr(model.cond_stage_model, "n_classes", 1))
        c = model.get_learned_conditioning({key: labels})
        return c, (model.get_unconditional_conditioning(n) if opt.scale != 1 else None)
    raise ScriptError(f"condition key '{key}' is not supported (unconditional, class or text models)")


def build_sampler(model, name: str):
    if name == "dpm_solver_logsnr":
        return make_sampler(model, "dpm_solver"), {"skip_type": "logSNR"}
    return make_sampler(model, name), {}


def run_row(model, name: str, steps: int, x_T, c, uc, opt, repeats: int = 1) -> tuple[torch.Tensor, float]:
    """(samples, fastest wall time of `repeats` calls); every call starts from the same noise."""
    best = math.inf
    for _ in range(max(1, repeats)):
        z, seconds = _timed_call(model, name, steps, x_T, c, uc, opt)
        best = min(best, seconds)
    return z, best


def _timed_call(model, name: str, steps: int, x_T, c, uc, opt) -> tuple[torch.Tensor, float]:
    sampler, extra = build_sampler(model, name)
    kwargs = dict(S=steps, batch_size=x_T.shape[0], shape=tuple(x_T.shape[1:]), conditioning=c, x_T=x_T,
                  unconditional_guidance_scale=opt.scale, unconditional_conditioning=uc, verbose=False, eta=0.0,
                  **extra)
    torch.manual_seed(opt.seed + 1)  # euler_a's noise; the others draw nothing that matters
    start = time.perf_counter()
    z, _ = sampler.sample(**kwargs)
    if x_T.device.type == "cuda":
        torch.cuda.synchronize()
    return z, time.perf_counter() - start


def main(argv=None) -> list[dict]:
    opt = build_parser().parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    rows = []
    for item in opt.samplers.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in ("ddim", "plms", "dpm_solver", "dpm_solver_logsnr", "dpmpp_2m_karras", "euler_a"):
            raise ScriptError(f"--samplers: unknown sampler '{name}'")
        if not steps.isdigit() or int(steps) < 1:
            raise ScriptError(f"--samplers: '{item}' needs a positive step count (name:steps)")
        rows.append((name, int(steps)))
    device = pick_device(opt.device)
    if opt.analytic:
        model, what = GaussianDataModel(), "Gaussian data N(0.3, 0.5^2), exact denoiser"
    elif opt.tiny:
        model, what = tiny_model().to(device), "random tiny LDM (untrained: timing and plumbing only)"
    else:
        if not (opt.config and opt.ckpt):
            raise ScriptError("give --config and --ckpt of a trained model, or --tiny / --analytic")
        model, what = load_model(load_config(opt.config), opt.ckpt, device), opt.ckpt
    h, w = opt.H or model.image_size, opt.W or model.image_size
    seed_everything(opt.seed)
    x_T = torch.randn(opt.n, model.channels, h, w, generator=torch.Generator().manual_seed(opt.seed)).to(device)

    results = []
    with torch.no_grad(), ema_scope(model):
        c, uc = conditioning(model, opt, opt.n, device)
        run_row(model, "ddim", 2, x_T, c, uc, opt)  # warm-up
        ref, ref_time = run_row(model, "ddim", opt.ref_steps, x_T, c, uc, opt)
        ref_norm = ref.double().norm().item()
        for name, steps in rows + [("ddim", opt.ref_steps)]:
            z, seconds = (ref, ref_time) if (name, steps) == ("ddim", opt.ref_steps) else \
                run_row(model, name, steps, x_T, c, uc, opt, opt.repeats)
            diff = (z.double() - ref.double())
            results.append({"sampler": name, "steps": steps, "s_per_image": seconds / opt.n,
                            "latent_rms_to_ref": math.sqrt(diff.pow(2).mean().item()),
                            "relative_l2_to_ref": diff.norm().item() / max(ref_norm, 1e-12)})
    print(f"model: {what}; {opt.n} x {model.channels}x{h}x{w} latents, scale {opt.scale}, device {device}, "
          f"reference DDIM-{opt.ref_steps} (eta 0)")
    print(f"{'sampler':<20}{'steps':>6}{'s/image':>11}{'latent RMS':>13}{'rel. L2':>10}")
    for r in results:
        print(f"{r['sampler']:<20}{r['steps']:>6}{r['s_per_image']:>11.4f}{r['latent_rms_to_ref']:>13.5f}"
              f"{r['relative_l2_to_ref']:>10.5f}")
    if opt.json:
        Path(opt.json).write_text(json.dumps({"model": what, "rows": results}, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(run_script(main))
