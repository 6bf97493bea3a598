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

from ldm import sampling_utils as su  # noqa: E402


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    su.add_prompt_args(p)
    su.add_output_args(p, "outputs/txt2img-samples")
    su.add_sampling_args(p, steps=50, eta=0.0, scale=7.5)
    p.add_argument("--fixed_code", action="store_true", help="use the same start noise for every batch")
    p.add_argument("--n_iter", type=int, default=2, help="how many times to sample each prompt batch")
    p.add_argument("--H", type=int, default=None, help="image height in pixels (default: the training size)")
    p.add_argument("--W", type=int, default=None, help="image width in pixels (default: the training size)")
    su.add_latent_and_model_args(p, n_samples=3, defaults_from_model=True)
    return p


def latent_shape(opt, model) -> tuple[int, int, int]:
    """(C, H/f, W/f) after checking --C, --f, --H, --W against the model."""
    f = su.check_latent_args(opt, model)
    channels = int(model.channels)
    train_size = int(model.image_size) * f
    h, w = opt.H or train_size, opt.W or train_size
    su.check_image_size(h, w, f, su.latent_multiple(model), "--H/--W")
    return channels, h // f, w // f


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    name = su.checked_sampler_name(opt)
    batches = su.prompt_batches(opt)

    device, model = su.load_model_from_args(opt)
    su.seed_everything(opt.seed)  # after loading: the results do not depend on weight initialization
    shape = latent_shape(opt, model)
    sampler = su.make_sampler(model, name)
    samples_dir = su.NumberedFolder(Path(opt.outdir) / "samples")
    start_code = torch.randn((opt.n_samples, *shape), device=device) if opt.fixed_code else None

    def sample_batch(c, uc, n: int) -> torch.Tensor:
        samples, _ = sampler.sample(
            S=opt.ddim_steps, conditioning=c, batch_size=n, shape=shape, verbose=True,
            unconditional_guidance_scale=opt.scale, unconditional_conditioning=uc,
            eta=opt.ddim_eta, x_T=None if start_code is None else start_code[:n])
        return samples

    return su.sample_prompt_batches(opt, model, device, batches, samples_dir, sample_batch)


if __name__ == "__main__":
    sys.exit(su.run_script(main))
