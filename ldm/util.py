"""Config -> object: `instantiate_from_config`, the alias table, and small shared helpers.

A config node is a mapping with a `target` (an import path such as
`ldm.models.autoencoder.AutoencoderKL`) and optional `params` (constructor keyword
arguments). Released configs name a few classes that live outside this package (the
unmaintained `taming` package, Lightning 1.x's `pytorch_lightning`, the original `main.py`);
`TARGET_ALIASES` maps them to our own classes so those YAML files work unchanged.

Mistakes in a config raise `ConfigError` with a one-line message naming the config path
(`model.params.unet_config.target: cannot import 'ldm.modules.foo.Bar'`); `main.py` prints
that line instead of a traceback.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# Exact target names of released configs -> our import paths.
TARGET_ALIASES: dict[str, str] = {
    # taming-transformers (not a dependency: see README "Why no taming")
    "taming.modules.vqvae.quantize.VectorQuantizer2": "ldm.modules.vqvae.quantize.VectorQuantizer2",
    "taming.modules.vqvae.quantize.VectorQuantizer": "ldm.modules.vqvae.quantize.VectorQuantizer2",
    "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator": "ldm.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
    "taming.modules.losses.lpips.LPIPS": "ldm.modules.losses.lpips.LPIPS",
    "taming.modules.discriminator.model.NLayerDiscriminator": "ldm.modules.losses.discriminator.NLayerDiscriminator",
    "taming.data.faceshq.CelebAHQTrain": "ldm.data.faceshq.CelebAHQTrain",
    "taming.data.faceshq.CelebAHQValidation": "ldm.data.faceshq.CelebAHQValidation",
    "taming.data.faceshq.FFHQTrain": "ldm.data.faceshq.FFHQTrain",
    "taming.data.faceshq.FFHQValidation": "ldm.data.faceshq.FFHQValidation",
    # the original main.py defined these; here they live in the package
    "main.DataModuleFromConfig": "ldm.data.datamodule.DataModuleFromConfig",
    "main.ImageLogger": "ldm.callbacks.image_logger.ImageLogger",
    "main.SetupCallback": "ldm.callbacks.setup.SetupCallback",
    "main.CUDACallback": "ldm.callbacks.cuda.CUDACallback",
}

# Prefix renames, applied when no exact alias matches.
PREFIX_ALIASES: dict[str, str] = {
    "pytorch_lightning.": "lightning.pytorch.",
}


class ConfigError(ValueError):
    """A mistake in a config: the message is one line that names the config path."""


def resolve_target(name: str) -> str:
    """Return the import path that `name` stands for after applying the alias tables."""
    if name in TARGET_ALIASES:
        return TARGET_ALIASES[name]
    for old, new in PREFIX_ALIASES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def get_obj_from_str(string: str, reload: bool = False) -> Any:
    """Import and return the object named by a dotted path such as `torch.nn.Identity`."""
    module_name, _, attr = resolve_target(string).rpartition(".")
    if not module_name:
        raise ImportError(f"'{string}' is not a dotted import path")
    module = importlib.import_module(module_name)
    if reload:
        module = importlib.reload(module)
    if not hasattr(module, attr):
        raise ImportError(f"module '{module_name}' has no attribute '{attr}'")
    return getattr(module, attr)


def _config_path(config: Any, path: str | None) -> str:
    if path:
        return path
    get_full_key = getattr(config, "_get_full_key", None)  # OmegaConf node: its key from the root
    if get_full_key is not None:
        try:
            key = get_full_key(None)
            if key:
                return str(key)
        except Exception:  # pragma: no cover - private OmegaConf API, best effort only
            pass
    return "config"


def _check_arguments(cls: Any, params: Mapping, where: str) -> None:
    """Raise ConfigError when `params` does not fit the constructor of `cls`."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    accepted = [
        name for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if not takes_kwargs:
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ConfigError(
                f"{where}.params: {cls.__name__} does not take {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(accepted) or '(none)'}"
            )
    missing = [
        name for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty and name not in params
    ]
    if missing:
        raise ConfigError(f"{where}.params: {cls.__name__} needs {', '.join(map(repr, missing))}")


def instantiate_from_config(config: Any, path: str | None = None, **extra: Any) -> Any:
    """Build `target(**params, **extra)` from a config node.

    The special values `__is_first_stage__` and `__is_unconditional__` return None, as in the
    original (LatentDiffusion interprets them). `path` names the node in error messages; for
    OmegaConf nodes it defaults to the node's key from the config root.
    """
    if config in ("__is_first_stage__", "__is_unconditional__"):
        return None
    where = _config_path(config, path)
    if not isinstance(config, Mapping) and not hasattr(config, "keys"):
        raise ConfigError(f"{where}: expected a mapping with a 'target' key, got {config!r}")
    if "target" not in config:
        raise ConfigError(f"{where}: missing 'target' key (the import path of the class to build)")
    target = config["target"]
    try:
        cls = get_obj_from_str(str(target))
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}.target: cannot import '{target}' ({err})") from err
    params = config.get("params", None)
    params = dict(params) if params is not None else {}
    params.update(extra)
    _check_arguments(cls, params, where)
    return cls(**params)


# ---- small helpers shared by the models (names as in the original ldm.util) ----------------

def exists(x: Any) -> bool:
    return x is not None


def default(val: Any, d: Any) -> Any:
    """`val` unless it is None, else `d` (called when it is a function)."""
    if exists(val):
        return val
    return d() if inspect.isfunction(d) else d


def ismap(x: Any) -> bool:
    """True for a 4-D tensor with more than 3 channels (a segmentation or feature map)."""
    return isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] > 3


def isimage(x: Any) -> bool:
    """True for a 4-D tensor with 1 or 3 channels."""
    return isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] in (1, 3)


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions."""
    return tensor.mean(dim=list(range(1, tensor.ndim)))


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters of `model` (logged when models are built)."""
    return sum(p.numel() for p in model.parameters())


def log_txt_as_img(wh: tuple[int, int], xc: list[str], size: int = 10) -> torch.Tensor:
    """Render each string of `xc` into a white (w, h) image; returns [B, 3, h, w] in [-1, 1].

    Used by `log_images` to show captions next to samples. Uses PIL's built-in font so that
    nothing has to be downloaded.
    """
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        font = ImageFont.load_default()
    chars_per_line = max(1, int(40 * (wh[0] / 256)))
    images = []
    for text in xc:
        canvas = Image.new("RGB", wh, color="white")
        draw = ImageDraw.Draw(canvas)
        text = str(text)
        lines = "\n".join(text[i:i + chars_per_line] for i in range(0, len(text), chars_per_line))
        draw.text((0, 0), lines, fill="black", font=font)
        images.append(np.asarray(canvas).transpose(2, 0, 1) / 127.5 - 1.0)
    return torch.tensor(np.stack(images), dtype=torch.float32)
