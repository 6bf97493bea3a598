#!/usr/bin/env python
"""Image-to-image translation (SDEdit, Meng et al. 2022): noise an input image's latent to an
intermediate step and denoise it with a text prompt, using DDIM.

    python scripts/img2img.py --prompt "a fantasy landscape" --init-img sketch.png --strength 0.75

--strength 0 returns the decoded input, 1 ignores it (pure generation); in between,
strength * ddim_steps DDIM steps are run from the noised latent. Writes `OUTDIR/samples/NNNNN.png`
and `OUTDIR/grid-NNNN.png` without overwriting anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ldm import sampling_utils as su  # noqa: E402


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    su.add_prompt_args(p)
    p.add_argument("--init-img", dest="init_img", required=True, help="path to the input image")
    p.add_argument("--strength", type=float, default=0.75,
                   help="how much to change the input, in [0, 1] (0: keep it, 1: pure generation)")
    su.add_output_args(p, "outputs/img2img-samples")
    su.add_sampling_args(p, steps=50, eta=0.0, scale=5.0)
    p.add_argument("--fixed_code", action="store_true", help="kept for the SD flags; img2img noise is per batch")
    p.add_argument("--n_iter", type=int, default=1, help="how many times to sample each prompt batch")
    su.add_latent_and_model_args(p, n_samples=2, defaults_from_model=False)
    return p


def translate(model, sampler, init_latent: torch.Tensor, c, uc, opt) -> torch.Tensor:
    """Latents after noising `init_latent` by --strength and denoising with DDIM."""
    t_enc = int(opt.strength * opt.ddim_steps)
    if t_enc == 0:
        return init_latent
    if t_enc >= opt.ddim_steps:
        samples, _ = sampler.sample(S=opt.ddim_steps, conditioning=c, batch_size=init_latent.shape[0],
                                    shape=tuple(init_latent.shape[1:]), verbose=True, eta=opt.ddim_eta,
                                    unconditional_guidance_scale=opt.scale, unconditional_conditioning=uc)
        return samples
    # The first DDIM step to run has schedule index t_enc - 1: noise to exactly that level (the
    # original encoded to index t_enc, one step noisier than where it started denoising).
    z_enc = sampler.stochastic_encode(init_latent, torch.full((init_latent.shape[0],), t_enc - 1,
                                                              device=init_latent.device))
    return sampler.decode(z_enc, c, t_enc, unconditional_guidance_scale=opt.scale,
                          unconditional_conditioning=uc)


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    if not 0.0 <= opt.strength <= 1.0:
        raise su.ScriptError(f"--strength must be in [0, 1], got {opt.strength}")
    name = su.sampler_name(opt)
    if name != "ddim":
        raise su.ScriptError(f"img2img runs DDIM (stochastic_encode / decode); --{name} is not supported here")
    su.check_steps_and_eta(opt, name)
    batches = su.prompt_batches(opt)

    device, model = su.load_model_from_args(opt)
    f = su.check_latent_args(opt, model)
    init_image = su.load_image(opt.init_img, multiple=su.latent_multiple(model)).to(device)
    su.check_image_size(init_image.shape[2], init_image.shape[3], f, su.latent_multiple(model), "--init-img size")
    su.seed_everything(opt.seed)
    sampler = su.make_sampler(model, name)
    sampler.make_schedule(ddim_num_steps=opt.ddim_steps, ddim_eta=opt.ddim_eta, verbose=False)
    samples_dir = su.NumberedFolder(Path(opt.outdir) / "samples")

    def sample_batch(c, uc, n: int) -> torch.Tensor:
        init_latent = model.get_first_stage_encoding(model.encode_first_stage(init_image.expand(n, -1, -1, -1)))
        return translate(model, sampler, init_latent, c, uc, opt)

    return su.sample_prompt_batches(opt, model, device, batches, samples_dir, sample_batch)


if __name__ == "__main__":
    sys.exit(su.run_script(main))
