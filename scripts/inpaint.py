#!/usr/bin/env python
"""Inpainting with the released `inpainting_big` LDM layout: the masked image's latent and the
down-sampled mask are concatenated to the noisy latent (Rombach et al. 2022, Sec. 4.5).

    python scripts/inpaint.py --indir data/inpainting_examples --outdir outputs/inpainting_results

--indir holds pairs `name.png` and `name_mask.png` (white = the region to fill). Each result is
written as `OUTDIR/name.png` (or `name-0001.png`, ... if that exists) with the unmasked pixels
taken from the input, plus `OUTDIR/grid-NNNN.png` of input, mask and result rows.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ldm import sampling_utils as su  # noqa: E402


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--indir", required=True, help="folder with name.png and name_mask.png pairs")
    p.add_argument("--outdir", required=True, help="folder for the results (never overwritten)")
    p.add_argument("--steps", type=int, default=50, help="number of DDIM sampling steps")
    p.add_argument("--skip_grid", action="store_true", help="do not write the overview grid")
    su.add_sampling_args(p, steps=None, eta=0.0, scale=None)
    su.add_model_args(p, "models/ldm/inpainting_big/config.yaml", "models/ldm/inpainting_big/last.ckpt")
    return p


def find_pairs(indir: str) -> list[tuple[str, str]]:
    """(image, mask) paths, sorted; every mask needs its image."""
    if not os.path.isdir(indir):
        raise su.ScriptError(f"--indir {indir} is not a folder")
    masks = sorted(glob.glob(os.path.join(indir, "*_mask.png")))
    if not masks:
        raise su.ScriptError(f"--indir {indir} has no name_mask.png files")
    pairs = []
    for mask in masks:
        image = mask[: -len("_mask.png")] + ".png"
        if not os.path.isfile(image):
            raise su.ScriptError(f"mask {mask} has no image {image}")
        pairs.append((image, mask))
    return pairs


def make_batch(image_path: str, mask_path: str, multiple: int, device: torch.device) -> dict[str, torch.Tensor]:
    """image, mask (binarised at 0.5) and masked image, all in [-1, 1], as the original script."""
    image = su.load_image(image_path)
    mask = (su.load_image(mask_path, mode="L") + 1.0) / 2.0
    if image.shape[-2:] != mask.shape[-2:]:
        raise su.ScriptError(f"mask {mask_path} is {mask.shape[3]}x{mask.shape[2]} but its image is "
                             f"{image.shape[3]}x{image.shape[2]}")
    h, w = image.shape[-2:]
    if h % multiple or w % multiple:
        raise su.ScriptError(f"image {image_path} ({w}x{h}) must have sides divisible by {multiple}")
    mask = (mask >= 0.5).float()
    image01 = (image + 1.0) / 2.0
    masked = (1.0 - mask) * image01
    return {k: (v * 2.0 - 1.0).to(device) for k, v in (("image", image01), ("mask", mask), ("masked_image", masked))}


def inpaint(model, sampler, batch: dict[str, torch.Tensor], steps: int, eta: float) -> torch.Tensor:
    """The inpainted image in [0, 1]: sampled, decoded, and pasted into the unmasked region."""
    c = model.get_learned_conditioning(batch["masked_image"])
    cc = torch.nn.functional.interpolate(batch["mask"], size=c.shape[-2:])
    c = torch.cat((c, cc), dim=1)
    shape = (c.shape[1] - 1,) + tuple(c.shape[2:])
    samples, _ = sampler.sample(S=steps, conditioning=c, batch_size=c.shape[0], shape=shape, eta=eta, verbose=True)
    predicted = torch.clamp((model.decode_first_stage(samples) + 1.0) / 2.0, 0.0, 1.0)
    image = torch.clamp((batch["image"] + 1.0) / 2.0, 0.0, 1.0)
    mask = torch.clamp((batch["mask"] + 1.0) / 2.0, 0.0, 1.0)
    return (1 - mask) * image + mask * predicted


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    opt.ddim_steps = opt.steps
    name = su.checked_sampler_name(opt)
    pairs = find_pairs(opt.indir)
    device, model = su.load_model_from_args(opt)
    if getattr(model.model, "conditioning_key", None) not in ("concat", "hybrid"):
        raise su.ScriptError(f"{opt.config} is not an inpainting model (conditioning_key must be concat)")
    f, multiple = su.first_stage_factor(model), su.latent_multiple(model)
    sampler = su.make_sampler(model, name)
    os.makedirs(opt.outdir, exist_ok=True)

    written, rows = [], []
    with torch.no_grad(), su.precision_scope(opt.precision, device), su.ema_scope(model):
        for image_path, mask_path in tqdm(pairs, desc="Inpainting"):
            batch = make_batch(image_path, mask_path, multiple, device)
            su.check_image_size(batch["image"].shape[2], batch["image"].shape[3], f, multiple, image_path)
            su.seed_everything(opt.seed)  # per image: a result does not depend on the others
            result = inpaint(model, sampler, batch, opt.steps, opt.ddim_eta)[0].cpu()
            path = su.unique_path(Path(opt.outdir) / Path(image_path).name)
            if su.save_png(result, path):
                written.append(path)
            if not opt.skip_grid and (not rows or rows[0][0].shape == result.shape):
                image = ((batch["image"][0] + 1) / 2).cpu()
                rows.append((image, ((batch["mask"][0] + 1) / 2).expand_as(image).cpu(), result))
    if not opt.skip_grid and rows:
        grid = torch.stack([img for row in rows for img in row])
        written.append(su.save_grid(grid, opt.outdir, nrow=3))
    print(f"Inpainted {len(pairs)} image(s) into {opt.outdir}")
    return written


if __name__ == "__main__":
    sys.exit(su.run_script(main))
