"""What the sampling scripts share: argument handling, one-line errors, model loading, the
sampler registry, image I/O with numbered outputs that never overwrite, and grids.

Errors a user can fix (a missing file, a bad size, a strength out of range) raise
`ScriptError`; `run_script` prints them, and the checkpoint and config errors of the package,
as one line `<script>: error: ...` and exits with code 2, like argparse does for bad flags.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm, trange

from ldm.image_grid import make_grid, to_uint8

logger = logging.getLogger(__name__)

SAMPLERS = ("ddim", "plms", "dpm_solver", "euler_a", "dpmpp_2m_karras")
EXIT_USAGE = 2


class ScriptError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`prog: error: ...`, exit code 2) instead of usage dumps."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def run_script(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None,
               prog: str | None = None) -> int:
    """Call `main(argv)`; user errors become one line on stderr and exit code 2."""
    from ldm.checkpoint import CheckpointError
    from ldm.util import ConfigError

    prog = prog or Path(sys.argv[0]).name
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # the scripts' closing line (where the samples are) is shown
    try:
        main(argv)
    except (ScriptError, CheckpointError, ConfigError, OSError) as err:  # OSError: e.g. a missing tokenizer
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.stderr.write(f"{prog}: error: {message}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    return 0


# ---- arguments shared by the scripts ------------------------------------------------------------

def add_sampling_args(parser: argparse.ArgumentParser, steps: int | None = 50, eta: float = 0.0,
                      scale: float | None = 7.5) -> None:
    """--ddim_steps (unless `steps` is None), --plms, --dpm_solver, --sampler, --ddim_eta,
    --scale (unless `scale` is None), --seed, --precision, --device."""
    if steps is not None:
        parser.add_argument("--ddim_steps", type=int, default=steps, help="number of sampling steps")
    parser.add_argument("--plms", action="store_true", help="use the PLMS sampler")
    parser.add_argument("--dpm_solver", action="store_true", help="use DPM-Solver++(2M)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="sampler (overrides --plms/--dpm_solver; default ddim)")
    parser.add_argument("--ddim_eta", type=float, default=eta, help="DDIM eta (0: deterministic)")
    if scale is not None:
        parser.add_argument("--scale", type=float, default=scale,
                            help="classifier-free guidance scale (1: no guidance)")
    parser.add_argument("--seed", type=int, default=42, help="seed that makes the run reproducible")
    parser.add_argument("--precision", choices=["full", "autocast"], default="full",
                        help="evaluate at this precision (autocast: fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")


def add_model_args(parser: argparse.ArgumentParser, config: str, ckpt: str) -> None:
    parser.add_argument("--config", default=config, help="the model's YAML config")
    parser.add_argument("--ckpt", default=ckpt, help="the model checkpoint (.ckpt or .safetensors)")


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    """--prompt and --from-file (read by `prompt_batches`)."""
    parser.add_argument("--prompt", default="a painting of a virus monster playing guitar", help="the prompt to render")
    parser.add_argument("--from-file", dest="from_file", default=None,
                        help="read prompts from this file, one per line")


def add_latent_and_model_args(parser: argparse.ArgumentParser, n_samples: int, defaults_from_model: bool) -> None:
    """--C, --f (checked by `check_latent_args`), --n_samples, --n_rows, and --config/--ckpt
    defaulting to Stable Diffusion v1. With `defaults_from_model` --C/--f default to the
    model's values; otherwise they are only checked against the model."""
    if defaults_from_model:
        c_help, f_help = "default: the model's", "default: the first stage's"
    else:
        c_help = f_help = "checked against the model"
    parser.add_argument("--C", type=int, default=None, help=f"latent channels ({c_help})")
    parser.add_argument("--f", type=int, default=None, help=f"downsampling factor ({f_help})")
    parser.add_argument("--n_samples", type=int, default=n_samples, help="batch size: samples per prompt")
    parser.add_argument("--n_rows", type=int, default=0, help="images per grid row (default: n_samples)")
    add_model_args(parser, "configs/stable-diffusion/v1-inference.yaml", "models/ldm/stable-diffusion-v1/model.ckpt")


def add_output_args(parser: argparse.ArgumentParser, outdir: str) -> None:
    parser.add_argument("--outdir", default=outdir, help="where to write the PNGs (never overwritten)")
    parser.add_argument("--skip_grid", action="store_true", help="do not write a grid of all samples")
    parser.add_argument("--skip_save", action="store_true", help="do not write the individual samples")


def sampler_name(opt: argparse.Namespace) -> str:
    if opt.sampler:
        return opt.sampler
    if opt.plms and opt.dpm_solver:
        raise ScriptError("--plms and --dpm_solver exclude each other")
    return "plms" if opt.plms else "dpm_solver" if opt.dpm_solver else "ddim"


def checked_sampler_name(opt: argparse.Namespace) -> str:
    """`sampler_name(opt)` after `check_steps_and_eta` accepts --ddim_steps and --ddim_eta for it."""
    name = sampler_name(opt)
    check_steps_and_eta(opt, name)
    return name


def check_steps_and_eta(opt: argparse.Namespace, name: str) -> None:
    if opt.ddim_steps < 1:
        raise ScriptError(f"--ddim_steps must be at least 1, got {opt.ddim_steps}")
    if opt.ddim_eta < 0:
        raise ScriptError(f"--ddim_eta must be >= 0, got {opt.ddim_eta}")
    if name == "plms" and opt.ddim_eta != 0:
        raise ScriptError("PLMS is deterministic: --ddim_eta must be 0 with --plms")


# ---- models --------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def download_hint(ckpt: str) -> str:
    """The command that fetches a released checkpoint at `ckpt`."""
    parts = Path(ckpt).parts
    if "stable-diffusion-v1" in parts or "stable-diffusion" in ckpt:
        return "HF_TOKEN=... bash scripts/download_models.sh sd-v1-4 (then link it to this path)"
    if "first_stage_models" in parts:
        i = parts.index("first_stage_models")
        name = parts[i + 1] if len(parts) > i + 2 else ""
        return f"bash scripts/download_first_stages.sh {name}".strip()
    if "ldm" in parts and parts.index("ldm") + 2 < len(parts):
        return f"bash scripts/download_models.sh {parts[parts.index('ldm') + 1]}"
    return "bash scripts/download_models.sh"


def load_config(paths: str | Sequence[str]) -> Any:
    """OmegaConf config merged from one or more YAML files."""
    from omegaconf import OmegaConf

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    configs = []
    for path in paths:
        if not os.path.isfile(path):
            raise ScriptError(f"config {path} not found")
        try:
            configs.append(OmegaConf.load(path))
        except Exception as err:  # yaml errors: one line
            raise ScriptError(f"config {path} cannot be read: {str(err).splitlines()[0]}") from err
    config = OmegaConf.merge(*configs)
    if "model" not in config:
        raise ScriptError(f"config {paths[-1]} has no 'model' section")
    return config


def load_model(config: Any, ckpt: str, device: torch.device | str = "cpu", use_ema: bool = False) -> Any:
    """Build `config.model` and load `ckpt` into it (strictly; keys that do not fit are named).

    Returns the model in eval mode on `device`, with `global_step` set from the file (or 0).
    """
    from ldm.checkpoint import load_checkpoint, load_state_dict_into
    from ldm.util import instantiate_from_config

    if not os.path.isfile(ckpt):
        raise ScriptError(f"checkpoint {ckpt} not found; download it with: {download_hint(ckpt)}")
    checkpoint = load_checkpoint(ckpt)
    model = instantiate_from_config(config.model)
    load_state_dict_into(model, checkpoint, use_ema=use_ema, source=ckpt)
    model.global_step_from_ckpt = int(checkpoint.get("global_step", 0) or 0)
    return model.to(device).eval()


def load_model_from_args(opt: argparse.Namespace) -> tuple[torch.device, Any]:
    """(device, model): the --device (default: the best available) and the --config/--ckpt model on it."""
    device = pick_device(opt.device)
    return device, load_model(load_config(opt.config), opt.ckpt, device)


def check_latent_args(opt: argparse.Namespace, model: Any) -> int:
    """Check --f and --C (when given) against the model; returns the first stage's factor f."""
    f = first_stage_factor(model)
    if opt.f is not None and opt.f != f:
        raise ScriptError(f"--f {opt.f} does not match the first stage's downsampling factor {f}")
    if opt.C is not None and opt.C != int(model.channels):
        raise ScriptError(f"--C {opt.C} does not match the model's latent channels {int(model.channels)}")
    return f


def load_unguided(opt: argparse.Namespace) -> tuple[str, torch.device, Any]:
    """For scripts without --scale (opt.scale is set to 1): check the sampler flags and
    --n_samples, then load the model; returns (sampler name, device, model)."""
    opt.scale = 1.0
    name = checked_sampler_name(opt)
    if opt.n_samples < 1:
        raise ScriptError("--n_samples must be at least 1")
    return (name, *load_model_from_args(opt))


def first_stage_factor(model: Any) -> int:
    """The first stage's down-sampling factor f (1 for `IdentityFirstStage`)."""
    encoder = getattr(model.first_stage_model, "encoder", None)
    return int(getattr(encoder, "downsample_factor", 1)) if encoder is not None else 1


def latent_multiple(model: Any) -> int:
    """Image sizes must be multiples of this: f times the UNet's total down-sampling."""
    unet = model.model.diffusion_model
    return first_stage_factor(model) * 2 ** (len(getattr(unet, "channel_mult", [1])) - 1)


def check_image_size(h: int, w: int, f: int, multiple: int, what: str = "H and W") -> None:
    if h <= 0 or w <= 0:
        raise ScriptError(f"{what} must be positive, got {h}x{w}")
    if h % f or w % f:
        raise ScriptError(f"{what} ({h}x{w}) must be divisible by the downsampling factor f={f}")
    if h % multiple or w % multiple:
        raise ScriptError(f"{what} ({h}x{w}) must be divisible by {multiple} (f={f} times the UNet's "
                          f"down-sampling)")


def make_sampler(model: Any, name: str) -> Any:
    """A sampler with the DDIM `sample(...)` interface by name (see SAMPLERS)."""
    if name == "ddim":
        from ldm.models.diffusion.ddim import DDIMSampler
        return DDIMSampler(model)
    if name == "plms":
        from ldm.models.diffusion.plms import PLMSSampler
        return PLMSSampler(model)
    if name == "dpm_solver":
        from ldm.models.diffusion.dpm_solver import DPMSolverSampler
        return DPMSolverSampler(model)
    if name in ("euler_a", "dpmpp_2m_karras"):
        from ldm.models.diffusion.k_samplers import KDiffusionSampler
        return KDiffusionSampler(model, "euler_ancestral" if name == "euler_a" else "dpmpp_2m")
    raise ScriptError(f"unknown sampler '{name}'; expected one of {', '.join(SAMPLERS)}")


def precision_scope(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """autocast (fp16 on CUDA, bf16 elsewhere) or nothing."""
    if precision != "autocast":
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def ema_scope(model: Any) -> contextlib.AbstractContextManager:
    scope = getattr(model, "ema_scope", None)
    return scope() if callable(scope) else contextlib.nullcontext()


# ---- images in and out ---------------------------------------------------------------------------

def load_image(path: str, multiple: int = 1, mode: str = "RGB") -> torch.Tensor:
    """[1, C, H, W] in [-1, 1]; sizes are cut down to a multiple of `multiple` (as SD's img2img)."""
    if not os.path.isfile(path):
        raise ScriptError(f"image {path} not found")
    try:
        image = Image.open(path).convert(mode)
    except OSError as err:
        raise ScriptError(f"{path} is not a readable image ({err})") from err
    w, h = image.size
    w2, h2 = w - w % multiple, h - h % multiple
    if w2 == 0 or h2 == 0:
        raise ScriptError(f"image {path} ({w}x{h}) is smaller than the minimum size {multiple}")
    if (w2, h2) != (w, h):
        logger.warning("%s: resized from %dx%d to %dx%d (a multiple of %d)", path, w, h, w2, h2, multiple)
        image = image.resize((w2, h2), resample=Image.Resampling.LANCZOS)
    array = np.asarray(image).astype(np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array).permute(2, 0, 1)[None] * 2.0 - 1.0


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Decoder output in [-1, 1] -> [0, 1], clamped."""
    return torch.clamp((images.float() + 1.0) / 2.0, 0.0, 1.0)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> bool:
    """Write a [C, H, W] image in [0, 1]; never replaces a file (returns False if `path` exists)."""
    array = to_uint8(image, (0.0, 1.0))
    if array.shape[-1] == 1:
        array = array[..., 0]
    try:
        with open(path, "xb") as f:
            Image.fromarray(array).save(f, format="PNG")
    except FileExistsError:
        return False
    return True


class NumberedFolder:
    """Writes `{prefix}{n:0{digits}}{suffix}` files, continuing after the highest number present.

    The original scripts started at the number of files in the folder; counting from the highest
    existing number instead can never land on a file that is already there.
    """

    def __init__(self, folder: str | os.PathLike, prefix: str = "", digits: int = 5, suffix: str = ".png"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix, self.digits, self.suffix = prefix, digits, suffix
        pattern = re.compile(rf"^{re.escape(prefix)}(\d+){re.escape(suffix)}$")
        numbers = [int(m.group(1)) for p in self.folder.iterdir() if (m := pattern.match(p.name))]
        self.next = max(numbers) + 1 if numbers else 0

    def path(self) -> Path:
        return self.folder / f"{self.prefix}{self.next:0{self.digits}d}{self.suffix}"

    def save(self, image: torch.Tensor) -> Path:
        """Save a [C, H, W] image in [0, 1] under the next free number."""
        while True:
            path = self.path()
            self.next += 1
            if save_png(image, path):
                return path

    def reserve(self) -> Path:
        """The next free path for a non-PNG file (e.g. an .npz), created empty so it is taken."""
        while True:
            path = self.path()
            self.next += 1
            try:
                with open(path, "xb"):
                    return path
            except FileExistsError:
                continue


def unique_path(path: str | os.PathLike) -> Path:
    """`path`, or `stem-0001.ext`, `stem-0002.ext`, ... if it exists."""
    path = Path(path)
    k = 0
    candidate = path
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}-{k:04d}{path.suffix}")
    return candidate


def save_grid(images: Sequence[torch.Tensor] | torch.Tensor, outdir: str | os.PathLike, nrow: int) -> Path:
    """All images ([B, C, H, W] in [0, 1], or a list of such batches) as `grid-NNNN.png`."""
    if not isinstance(images, torch.Tensor):
        images = torch.cat(list(images), dim=0)
    grid = make_grid(images, nrow=max(1, nrow))
    return NumberedFolder(outdir, prefix="grid-", digits=4).save(grid)


def read_prompts(path: str) -> list[str]:
    """Non-empty lines of a prompt file."""
    if not os.path.isfile(path):
        raise ScriptError(f"prompt file {path} not found")
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f.read().splitlines() if line.strip()]
    if not prompts:
        raise ScriptError(f"prompt file {path} is empty")
    return prompts


def chunk(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


# ---- prompt-driven sampling (txt2img, img2img) ---------------------------------------------------

def prompt_batches(opt: argparse.Namespace) -> list[list[str]]:
    """--prompt repeated --n_samples times, or the lines of --from-file in batches of --n_samples."""
    if opt.n_samples < 1 or opt.n_iter < 1:
        raise ScriptError("--n_samples and --n_iter must be at least 1")
    prompts = read_prompts(opt.from_file) if opt.from_file else [opt.prompt]
    return [[p] * opt.n_samples for p in prompts] if not opt.from_file else list(chunk(prompts, opt.n_samples))


def sample_prompt_batches(opt: argparse.Namespace, model: Any, device: torch.device,
                          batches: list[list[str]], samples_dir: NumberedFolder,
                          sample_batch: Callable[[Any, Any, int], torch.Tensor]) -> list[Path]:
    """Run `sample_batch(c, uc, n) -> latents` --n_iter times over `batches` (uc: the empty
    prompt's conditioning when --scale is not 1, else None); save the decoded images in
    `samples_dir` (unless --skip_save) and one grid of all in --outdir (unless --skip_grid)."""
    outdir = Path(opt.outdir)
    written, all_samples = [], []
    with torch.no_grad(), precision_scope(opt.precision, device), ema_scope(model):
        for _ in trange(opt.n_iter, desc="Sampling"):
            for batch in tqdm(batches, desc="data"):
                n = len(batch)
                uc = model.get_learned_conditioning(n * [""]) if opt.scale != 1.0 else None
                c = model.get_learned_conditioning(batch)
                images = to_unit_range(model.decode_first_stage(sample_batch(c, uc, n))).cpu()
                if not opt.skip_save:
                    written += [samples_dir.save(img) for img in images]
                if not opt.skip_grid:
                    all_samples.append(images)
    if not opt.skip_grid:
        written.append(save_grid(all_samples, outdir, opt.n_rows or opt.n_samples))
    logger.info("Your samples are ready and waiting for you here: %s", outdir)
    return written


def save_samples(images: torch.Tensor, samples_dir: NumberedFolder, opt: argparse.Namespace,
                 nrow: int) -> list[Path]:
    """Save `images` ([B, C, H, W] in [0, 1]) in `samples_dir` (unless --skip_save) and as a grid
    in --outdir (unless --skip_grid); returns the paths written."""
    written = [] if opt.skip_save else [samples_dir.save(img) for img in images]
    if not opt.skip_grid:
        written.append(save_grid(images, opt.outdir, nrow=nrow))
    logger.info("Your samples are ready and waiting for you here: %s", opt.outdir)
    return written
