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
from tqdm import tqdm, trange  # noqa: E402

from ldm.sampling_utils import (  # noqa: E402
    ArgumentParser,
    NumberedFolder,
    ScriptError,
    add_model_args,
    add_output_args,
    add_sampling_args,
    check_image_size,
    check_steps_and_eta,
    chunk,
    ema_scope,
    first_stage_factor,
    latent_multiple,
    load_config,
    load_image,
    load_model,
    make_sampler,
    pick_device,
    precision_scope,
    read_prompts,
    run_script,
    sampler_name,
    save_grid,
    seed_everything,
    to_unit_range,
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt", default="a painting of a virus monster playing guitar", help="the prompt to render")
    p.add_argument("--from-file", dest="from_file", default=None, help="read prompts from this file, one per line")
    p.add_argument("--init-img", dest="init_img", required=True, help="path to the input image")
    p.add_argument("--strength", type=float, default=0.75,
                   help="how much to change the input, in [0, 1] (0: keep it, 1: pure generation)")
    add_output_args(p, "outputs/img2img-samples")
    add_sampling_args(p, steps=50, eta=0.0, scale=5.0)
    p.add_argument("--fixed_code", action="store_true", help="kept for the SD flags; img2img noise is per batch")
    p.add_argument("--n_iter", type=int, default=1, help="how many times to sample each prompt batch")
    p.add_argument("--C", type=int, default=None, help="latent channels (checked against the model)")
    p.add_argument("--f", type=int, default=None, help="downsampling factor (checked against the model)")
    p.add_argument("--n_samples", type=int, default=2, help="batch size: samples per prompt")
    p.add_argument("--n_rows", type=int, default=0, help="images per grid row (default: n_samples)")
    add_model_args(p, "configs/stable-diffusion/v1-inference.yaml", "models/ldm/stable-diffusion-v1/model.ckpt")
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
        raise ScriptError(f"--strength must be in [0, 1], got {opt.strength}")
    name = sampler_name(opt)
    if name != "ddim":
        raise ScriptError(f"img2img runs DDIM (stochastic_encode / decode); --{name} is not supported here")
    check_steps_and_eta(opt, name)
    if opt.n_samples < 1 or opt.n_iter < 1:
        raise ScriptError("--n_samples and --n_iter must be at least 1")
    prompts = read_prompts(opt.from_file) if opt.from_file else [opt.prompt]
    batches = [[p] * opt.n_samples for p in prompts] if not opt.from_file else list(chunk(prompts, opt.n_samples))

    device = pick_device(opt.device)
    model = load_model(load_config(opt.config), opt.ckpt, device)
    f = first_stage_factor(model)
    if opt.f is not None and opt.f != f:
        raise ScriptError(f"--f {opt.f} does not match the first stage's downsampling factor {f}")
    if opt.C is not None and opt.C != int(model.channels):
        raise ScriptError(f"--C {opt.C} does not match the model's latent channels {model.channels}")
    init_image = load_image(opt.init_img, multiple=latent_multiple(model)).to(device)
    check_image_size(init_image.shape[2], init_image.shape[3], f, latent_multiple(model), "--init-img size")
    seed_everything(opt.seed)
    sampler = make_sampler(model, name)
    sampler.make_schedule(ddim_num_steps=opt.ddim_steps, ddim_eta=opt.ddim_eta, verbose=False)
    outdir = Path(opt.outdir)
    samples_dir = NumberedFolder(outdir / "samples")

    written, all_samples = [], []
    with torch.no_grad(), precision_scope(opt.precision, device), ema_scope(model):
        for _ in trange(opt.n_iter, desc="Sampling"):
            for batch in tqdm(batches, desc="data"):
                n = len(batch)
                init_latent = model.get_first_stage_encoding(model.encode_first_stage(init_image.expand(n, -1, -1, -1)))
                uc = model.get_learned_conditioning(n * [""]) if opt.scale != 1.0 else None
                c = model.get_learned_conditioning(batch)
                samples = translate(model, sampler, init_latent, c, uc, opt)
                images = to_unit_range(model.decode_first_stage(samples)).cpu()
                if not opt.skip_save:
                    written += [samples_dir.save(img) for img in images]
                if not opt.skip_grid:
                    all_samples.append(images)
    if not opt.skip_grid:
        written.append(save_grid(all_samples, outdir, opt.n_rows or opt.n_samples))
    print(f"Your samples are ready and waiting for you here: {outdir}")
    return written


if __name__ == "__main__":
    sys.exit(run_script(main))
