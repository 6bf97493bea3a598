#!/usr/bin/env python
"""Text-to-image sampling with a text-conditional LDM (the paper's LDM-KL-8-G / BERT text2img,
or Stable Diffusion v1), with the flags of the Stable Diffusion v1 script.

    python scripts/txt2img.py --prompt "a painting of a virus monster playing guitar" --plms
    python scripts/txt2img.py --from-file prompts.txt --config models/ldm/text2img256/config.yaml \
        --ckpt models/ldm/text2img256/model.ckpt --scale 5.0

Writes `OUTDIR/samples/NNNNN.png` and `OUTDIR/grid-NNNN.png`, continuing the numbering of files
already there. --H/--W larger than the training size sample convolutionally (the paper's
"beyond 256x256", Sec. 4.3.2); they must be divisible by the downsampling factor --f.
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
    add_output_args(p, "outputs/txt2img-samples")
    add_sampling_args(p, steps=50, eta=0.0, scale=7.5)
    p.add_argument("--fixed_code", action="store_true", help="use the same start noise for every batch")
    p.add_argument("--n_iter", type=int, default=2, help="how many times to sample each prompt batch")
    p.add_argument("--H", type=int, default=None, help="image height in pixels (default: the training size)")
    p.add_argument("--W", type=int, default=None, help="image width in pixels (default: the training size)")
    p.add_argument("--C", type=int, default=None, help="latent channels (default: the model's)")
    p.add_argument("--f", type=int, default=None, help="downsampling factor (default: the first stage's)")
    p.add_argument("--n_samples", type=int, default=3, help="batch size: samples per prompt")
    p.add_argument("--n_rows", type=int, default=0, help="images per grid row (default: n_samples)")
    add_model_args(p, "configs/stable-diffusion/v1-inference.yaml", "models/ldm/stable-diffusion-v1/model.ckpt")
    return p


def latent_shape(opt, model) -> tuple[int, int, int]:
    """(C, H/f, W/f) after checking --C, --f, --H, --W against the model."""
    f = first_stage_factor(model)
    if opt.f is not None and opt.f != f:
        raise ScriptError(f"--f {opt.f} does not match the first stage's downsampling factor {f}")
    channels = int(model.channels)
    if opt.C is not None and opt.C != channels:
        raise ScriptError(f"--C {opt.C} does not match the model's latent channels {channels}")
    train_size = int(model.image_size) * f
    h, w = opt.H or train_size, opt.W or train_size
    check_image_size(h, w, f, latent_multiple(model), "--H/--W")
    return channels, h // f, w // f


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    name = sampler_name(opt)
    check_steps_and_eta(opt, name)
    if opt.n_samples < 1 or opt.n_iter < 1:
        raise ScriptError("--n_samples and --n_iter must be at least 1")
    prompts = read_prompts(opt.from_file) if opt.from_file else [opt.prompt]
    batches = [[p] * opt.n_samples for p in prompts] if not opt.from_file else list(chunk(prompts, opt.n_samples))

    device = pick_device(opt.device)
    model = load_model(load_config(opt.config), opt.ckpt, device)
    seed_everything(opt.seed)  # after loading: the results do not depend on weight initialization
    shape = latent_shape(opt, model)
    sampler = make_sampler(model, name)
    outdir = Path(opt.outdir)
    samples_dir = NumberedFolder(outdir / "samples")
    start_code = torch.randn((opt.n_samples, *shape), device=device) if opt.fixed_code else None

    written, all_samples = [], []
    with torch.no_grad(), precision_scope(opt.precision, device), ema_scope(model):
        for _ in trange(opt.n_iter, desc="Sampling"):
            for batch in tqdm(batches, desc="data"):
                n = len(batch)
                uc = model.get_learned_conditioning(n * [""]) if opt.scale != 1.0 else None
                c = model.get_learned_conditioning(batch)
                samples, _ = sampler.sample(
                    S=opt.ddim_steps, conditioning=c, batch_size=n, shape=shape, verbose=True,
                    unconditional_guidance_scale=opt.scale, unconditional_conditioning=uc,
                    eta=opt.ddim_eta, x_T=None if start_code is None else start_code[:n])
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
