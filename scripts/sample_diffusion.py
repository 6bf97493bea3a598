#!/usr/bin/env python
"""Bulk sampling from an unconditional or class-conditional LDM, for evaluation (FID etc.).

    python scripts/sample_diffusion.py -r models/ldm/celeba256/model.ckpt -n 50000 --batch_size 50 -c 200 -e 0
    python scripts/sample_diffusion.py -r logs/2024-01-01T00-00-00_cin256 -n 1000 --scale 3.0

-r is a checkpoint (its config is the `config.yaml` next to it or the `configs/*.yaml` of its
log dir) or a log dir. Samples go to `LOGDIR/samples/<global step>/<time>/img/sample_NNNNNN.png`
(LOGDIR: -l/<model folder name>, or the model's folder), all of them to one
`numpy/<N>x<H>x<W>x3-samples.npz` (uint8, key `arr_0`, as the original and `evaluate.py` read it)
and the first 64 to `grid-0000.png`.
"""
from __future__ import annotations

import datetime
import glob
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import trange  # noqa: E402

from ldm.image_grid import to_uint8  # noqa: E402
from ldm import sampling_utils as su  # noqa: E402

GRID_MAX = 64


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-r", "--resume", "--ckpt", dest="resume", required=True,
                   help="checkpoint file or log dir of the model")
    p.add_argument("-n", "--n_samples", type=int, default=50000, help="number of samples to draw")
    p.add_argument("-e", "--eta", type=float, default=1.0, help="DDIM eta (0: deterministic)")
    p.add_argument("-v", "--vanilla_sample", action="store_true",
                   help="ancestral DDPM sampling over all timesteps instead of DDIM")
    p.add_argument("-l", "--logdir", default="none", help="where to write (default: the model's folder)")
    p.add_argument("-c", "--custom_steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--batch_size", type=int, default=10, help="samples per batch")
    p.add_argument("--skip_grid", action="store_true", help="do not write a grid of the first 64 samples")
    p.add_argument("--config", nargs="*", default=None, help="config file(s) (default: found next to -r)")
    p.add_argument("--sampler", choices=su.SAMPLERS, default="ddim", help="sampler for non-vanilla sampling")
    p.add_argument("--classes", type=int, nargs="*", default=None,
                   help="class-conditional models: labels to cycle through (default: uniformly random)")
    p.add_argument("--scale", type=float, default=1.0, help="classifier-free guidance scale (class models)")
    p.add_argument("--seed", type=int, default=23, help="seed that makes the run reproducible")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    return p


def resolve(resume: str, configs: list[str] | None) -> tuple[str, list[str], str]:
    """(checkpoint, config files, model folder) for -r."""
    if os.path.isdir(resume):
        folder = resume.rstrip("/")
        candidates = [os.path.join(folder, "model.ckpt"), os.path.join(folder, "checkpoints", "last.ckpt")]
        ckpt = next((c for c in candidates if os.path.isfile(c)), None)
        if ckpt is None:
            raise su.ScriptError(f"-r {resume}: no model.ckpt or checkpoints/last.ckpt in this folder")
    elif os.path.isfile(resume):
        ckpt = resume
        folder = os.path.dirname(os.path.abspath(resume))
        if os.path.basename(folder) == "checkpoints":
            folder = os.path.dirname(folder)
    else:
        raise su.ScriptError(f"-r {resume}: no such checkpoint or log dir; download released models with "
                             f"bash scripts/download_models.sh")
    if configs:
        return ckpt, configs, folder
    found = sorted(glob.glob(os.path.join(folder, "config.yaml"))) or \
        sorted(glob.glob(os.path.join(folder, "configs", "*.yaml")))
    if not found:
        raise su.ScriptError(f"no config.yaml or configs/*.yaml next to {ckpt}; pass --config")
    return ckpt, found, folder


def conditioning(model, labels: torch.Tensor | None, scale: float):
    """(c, uc) for a batch: None for unconditional models."""
    if model.cond_stage_model is None or labels is None:
        return None, None
    key = model.cond_stage_key
    c = model.get_learned_conditioning({key: labels})
    uc = None
    if scale != 1.0:
        try:
            uc = model.get_unconditional_conditioning(labels.shape[0])
        except (ValueError, NotImplementedError) as err:
            raise su.ScriptError(f"--scale {scale} needs a null class ({err})") from err
    return c, uc


def class_labels(model, opt, start: int, n: int, rng: torch.Generator) -> torch.Tensor | None:
    if model.cond_stage_model is None:
        return None
    n_classes = getattr(model.cond_stage_model, "n_classes", None)
    if n_classes is None:
        raise su.ScriptError(f"{type(model.cond_stage_model).__name__} conditioning is not supported here: "
                             "this script samples unconditional and class-conditional models")
    if opt.classes:
        bad = [c for c in opt.classes if not 0 <= c < n_classes]
        if bad:
            raise su.ScriptError(f"--classes {bad} outside [0, {n_classes})")
        labels = [opt.classes[(start + i) % len(opt.classes)] for i in range(n)]
        return torch.tensor(labels, device=model.device)
    null = getattr(model.cond_stage_model, "null_class", None)
    high = n_classes - 1 if null == n_classes - 1 else n_classes
    return torch.randint(0, high, (n,), generator=rng).to(model.device)


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    if opt.n_samples < 1 or opt.batch_size < 1 or opt.custom_steps < 1:
        raise su.ScriptError("-n, --batch_size and -c must be at least 1")
    if opt.eta < 0:
        raise su.ScriptError(f"--eta must be >= 0, got {opt.eta}")
    ckpt, configs, folder = resolve(opt.resume, opt.config)
    device = su.pick_device(opt.device)
    model = su.load_model(su.load_config(configs), ckpt, device)
    su.seed_everything(opt.seed)
    base = folder if opt.logdir == "none" else os.path.join(opt.logdir, os.path.basename(folder))
    now = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    logdir = Path(base) / "samples" / f"{model.global_step_from_ckpt:08}" / now
    images_dir = su.NumberedFolder(logdir / "img", prefix="sample_", digits=6)
    sampler = None if opt.vanilla_sample else su.make_sampler(model, opt.sampler)
    shape = (model.channels, model.image_size, model.image_size)
    rng = torch.Generator().manual_seed(opt.seed)

    written, arrays = [], []
    with torch.no_grad(), su.ema_scope(model):
        for start in trange(0, opt.n_samples, opt.batch_size, desc="Sampling batches"):
            n = min(opt.batch_size, opt.n_samples - start)
            labels = class_labels(model, opt, start, n, rng)
            c, uc = conditioning(model, labels, opt.scale)
            if sampler is None:
                z = model.sample(cond=c, batch_size=n, verbose=False)
            else:
                z, _ = sampler.sample(S=opt.custom_steps, batch_size=n, shape=shape, conditioning=c, eta=opt.eta,
                                      unconditional_guidance_scale=opt.scale, unconditional_conditioning=uc,
                                      verbose=False)
            images = su.to_unit_range(model.decode_first_stage(z)).cpu()
            written += [images_dir.save(img) for img in images]
            arrays.append(to_uint8(images, (0.0, 1.0)))
    all_images = np.concatenate(arrays, axis=0)
    npz = su.unique_path(logdir / "numpy" / f"{'x'.join(map(str, all_images.shape))}-samples.npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, all_images)
    written.append(npz)
    if not opt.skip_grid:
        first = torch.from_numpy(all_images[:GRID_MAX]).permute(0, 3, 1, 2).float() / 255.0
        written.append(su.save_grid(first, logdir, nrow=int(math.ceil(math.sqrt(first.shape[0])))))
    print(f"{len(all_images)} samples in {logdir}")
    return written


if __name__ == "__main__":
    sys.exit(su.run_script(main))
