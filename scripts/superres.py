#!/usr/bin/env python
"""Super-resolution with the `bsr_sr` LDM layout: the low-resolution image, in [-1, 1], is
concatenated to the noisy latent, whose size it shares; the output is f times larger, with f the
first stage's factor (x4 for the released model). Any input size works: sides are padded
(reflect) to what the UNet needs and the result is cropped back; large inputs are denoised and
decoded in overlapping patches (`split_input_params`, as the original notebook).

    python scripts/superres.py --input low_res.png --outdir outputs/superres

Writes `OUTDIR/NNNNN.png` and `OUTDIR/grid-NNNN.png` (input, upscaled by repetition, next to
the results) without overwriting anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ldm import sampling_utils as su  # noqa: E402


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="the low-resolution image (any size)")
    p.add_argument("--outdir", default="outputs/superres", help="where to write the PNGs (never overwritten)")
    p.add_argument("--n_samples", type=int, default=1, help="how many upscalings to draw")
    p.add_argument("--skip_grid", action="store_true", help="do not write the input/results grid")
    p.add_argument("--patch_size", type=int, default=128,
                   help="latent patch size for patch-wise sampling of large inputs (0: never)")
    p.add_argument("--patch_stride", type=int, default=64, help="latent stride between patches")
    su.add_sampling_args(p, steps=100, eta=1.0, scale=None)
    su.add_model_args(p, "models/ldm/bsr_sr/config.yaml", "models/ldm/bsr_sr/model.ckpt")
    return p


def pad_to(x: torch.Tensor, multiple: int, minimum: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right of x to a multiple (and at least `minimum`); returns the original size."""
    h, w = x.shape[-2:]
    h2 = max(minimum, -(-h // multiple) * multiple)
    w2 = max(minimum, -(-w // multiple) * multiple)
    if (h2, w2) != (h, w):
        mode = "reflect" if h2 - h < h and w2 - w < w else "replicate"
        x = F.pad(x, (0, w2 - w, 0, h2 - h), mode=mode)
    return x, (h, w)


def patch_grid_size(size: int, ks: int, stride: int) -> int:
    """Smallest size >= `size` that `ks` x `ks` patches with `stride` cover exactly."""
    if size <= ks:
        return ks
    return ks + -(-(size - ks) // stride) * stride


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    name, device, model = su.load_unguided(opt)
    if getattr(model.model, "conditioning_key", None) != "concat" or model.cond_stage_key != "LR_image":
        raise su.ScriptError(f"{opt.config} is not a super-resolution model (bsr_sr layout: concat of LR_image)")
    f, multiple = su.first_stage_factor(model), su.latent_multiple(model) // su.first_stage_factor(model)
    lr = su.load_image(opt.input).to(device)  # [1, 3, h, w] in [-1, 1]; latent cells = LR pixels
    if opt.patch_size and opt.patch_size % multiple or opt.patch_stride % multiple:
        raise su.ScriptError(f"--patch_size and --patch_stride must be multiples of {multiple}")
    use_patches = bool(opt.patch_size) and max(lr.shape[-2:]) > opt.patch_size
    if use_patches:
        ks, stride = opt.patch_size, opt.patch_stride
        size = lambda s: patch_grid_size(s, ks, stride)  # noqa: E731
        c, (h, w) = pad_to(lr, 1)
        c = F.pad(c, (0, size(w) - w, 0, size(h) - h), mode="replicate")
        model.split_input_params = {"ks": (ks, ks), "stride": (stride, stride), "vqf": f,
                                    "patch_distributed_vq": True, "tie_braker": False, "clip_max_weight": 0.5,
                                    "clip_min_weight": 0.01, "clip_max_tie_weight": 0.5, "clip_min_tie_weight": 0.01}
    else:
        c, (h, w) = pad_to(lr, multiple)
    su.seed_everything(opt.seed)
    sampler = su.make_sampler(model, name)
    out = su.NumberedFolder(opt.outdir)
    results = []
    with torch.no_grad(), su.precision_scope(opt.precision, device), su.ema_scope(model):
        for _ in range(opt.n_samples):
            cond = model.get_learned_conditioning(c)
            shape = (model.channels, *cond.shape[-2:])
            z, _ = sampler.sample(S=opt.ddim_steps, batch_size=1, shape=shape, conditioning=cond, eta=opt.ddim_eta,
                                  verbose=True)
            image = su.to_unit_range(model.decode_first_stage(z))[..., : h * f, : w * f].cpu()
            results.append(image)
    written = [out.save(img[0]) for img in results]
    if not opt.skip_grid:  # the input (nearest-neighbour upscaled) next to the results
        upscaled = F.interpolate(su.to_unit_range(lr).cpu(), scale_factor=f, mode="nearest")
        written.append(su.save_grid([upscaled] + results, opt.outdir, nrow=opt.n_samples + 1))
    print(f"x{f} super-resolution of {w}x{h} -> {w * f}x{h * f} written to {opt.outdir}")
    return written


if __name__ == "__main__":
    sys.exit(su.run_script(main))
