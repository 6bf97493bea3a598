#!/usr/bin/env python
"""Semantic image synthesis with the `semantic_synthesis` LDM layout: a label map (one class
index per pixel) is one-hot encoded, resized by the model's `SpatialRescaler` to the latent size
and concatenated to the noisy latent (Rombach et al. 2022, Sec. 4.3.2). Maps larger than the
training size are sampled convolutionally (the paper's 512x1024 landscapes).

    python scripts/semantic_synthesis.py --label-map landscape_labels.png --outdir outputs/semantic

The PNG is read as integers (mode L or P): pixel value k = class k, below the model's number of
classes. Writes `OUTDIR/samples/NNNNN.png` and a grid without overwriting anything.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ldm import sampling_utils as su  # noqa: E402


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label-map", dest="label_map", required=True, help="PNG of class indices")
    p.add_argument("--n_samples", type=int, default=4, help="samples of the label map")
    su.add_output_args(p, "outputs/semantic-synthesis-samples")
    su.add_sampling_args(p, steps=100, eta=1.0, scale=None)
    su.add_model_args(p, "models/ldm/semantic_synthesis256/config.yaml", "models/ldm/semantic_synthesis256/model.ckpt")
    return p


def read_label_map(path: str, n_labels: int) -> torch.Tensor:
    """One-hot [1, n_labels, H, W] float from a PNG of class indices."""
    if not os.path.isfile(path):
        raise su.ScriptError(f"label map {path} not found")
    try:
        image = Image.open(path)
    except OSError as err:
        raise su.ScriptError(f"{path} is not a readable image ({err})") from err
    if image.mode not in ("L", "P", "I", "I;16"):
        raise su.ScriptError(f"label map {path} has mode {image.mode}; expected one class index per pixel (L or P)")
    labels = np.asarray(image).astype(np.int64)
    if labels.max() >= n_labels:
        raise su.ScriptError(f"label map {path} has class {labels.max()}, but the model knows {n_labels} classes")
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), n_labels)
    return onehot.permute(2, 0, 1)[None].float()


def number_of_classes(model) -> int:
    """Channels of the one-hot map the condition encoder takes (SpatialRescaler's in_channels)."""
    encoder = model.cond_stage_model
    mapper = getattr(encoder, "channel_mapper", None)
    if mapper is not None:
        return int(mapper.in_channels)
    n = getattr(encoder, "in_channels", None)  # a rescaler without channel mixing keeps the classes
    return int(n) if n else int(model.model.diffusion_model.in_channels) - int(model.channels)


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    name, device, model = su.load_unguided(opt)
    if model.cond_stage_key != "segmentation" or getattr(model.model, "conditioning_key", None) != "concat":
        raise su.ScriptError(f"{opt.config} is not a semantic synthesis model (concat of 'segmentation')")
    n_labels = number_of_classes(model)
    seg = read_label_map(opt.label_map, n_labels).to(device)
    f = su.first_stage_factor(model)
    su.check_image_size(seg.shape[2], seg.shape[3], f, su.latent_multiple(model), "the label map size")
    su.seed_everything(opt.seed)
    sampler = su.make_sampler(model, name)
    samples_dir = su.NumberedFolder(Path(opt.outdir) / "samples")
    with torch.no_grad(), su.precision_scope(opt.precision, device), su.ema_scope(model):
        n = opt.n_samples
        c = model.get_learned_conditioning(seg.expand(n, -1, -1, -1))
        shape = (model.channels, seg.shape[2] // f, seg.shape[3] // f)
        if tuple(c.shape[-2:]) != shape[1:]:
            raise su.ScriptError(f"the condition encoder maps the label map to {tuple(c.shape[-2:])}, not the latent "
                                 f"size {shape[1:]}")
        z, _ = sampler.sample(S=opt.ddim_steps, batch_size=n, shape=shape, conditioning=c, eta=opt.ddim_eta,
                              verbose=True)
        images = su.to_unit_range(model.decode_first_stage(z)).cpu()
    return su.save_samples(images, samples_dir, opt, nrow=n)


if __name__ == "__main__":
    sys.exit(su.run_script(main))
