"""LPIPS perceptual distance (Zhang et al. 2018) with a VGG16 backbone, our own code.

Layout and math as in taming-transformers' `LPIPS` (the module the released first-stage
training used), so `loss.perceptual_loss.*` keys of released training checkpoints load:
`scaling_layer.{shift,scale}`, `net.slice{1..5}.{N}.{weight,bias}` (N = the layer's index in
torchvision's `vgg16().features`) and `lin{0..4}.model.1.weight`.

Weights (never random: construction fails with instructions when a file is missing):
* VGG16 ImageNet backbone: `vgg_path`, else `$LDM_VGG16_WEIGHTS`, else the torch hub cache
  (`<torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth`), else downloaded from
  `VGG16_URL` into that cache (unless `download=False` or `$LDM_OFFLINE=1`). torchvision's file
  layout (`features.N.weight`, classifier keys ignored) and our own layout both load.
* Linear heads (`lin{0..4}.model.1.weight`): `lin_path`, else `$LDM_LPIPS_WEIGHTS`, else the
  copy shipped in the `torchmetrics` wheel (`torchmetrics/functional/image/lpips_models/vgg.pth`,
  the same file taming downloads), else downloaded from `LPIPS_LIN_URL` into the hub cache.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"
LPIPS_LIN_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
LPIPS_LIN_FILENAME = "lpips_vgg_v0.1.pth"
VGG16_ENV, LPIPS_LIN_ENV, OFFLINE_ENV = "LDM_VGG16_WEIGHTS", "LDM_LPIPS_WEIGHTS", "LDM_OFFLINE"

# torchvision vgg16().features: numbers are 3x3 conv widths (each followed by ReLU), "M" max-pool.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: features[0:4], [4:9], [9:16], [16:23], [23:30].
SLICE_BOUNDS = (0, 4, 9, 16, 23, 30)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class LPIPSWeightsError(FileNotFoundError):
    """LPIPS weights could not be found or read; the message says how to provide them."""


class ScalingLayer(nn.Module):
    """Maps images in [-1, 1] to the ImageNet normalisation LPIPS was trained with."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """A learned 1x1 conv (no bias) to one channel, after dropout (`model.0`) when `use_dropout`."""

    def __init__(self, chn_in: int, chn_out: int = 1, use_dropout: bool = False):
        super().__init__()
        # index 0 stays occupied without dropout so the weight is always `model.1.weight`
        self.model = nn.Sequential(nn.Dropout() if use_dropout else nn.Identity(),
                                   nn.Conv2d(chn_in, chn_out, 1, stride=1, padding=0, bias=False))


class VGG16Features(nn.Module):
    """torchvision's `vgg16().features[:30]`, split in five slices that keep the layer indices
    as module names; returns the five ReLU outputs LPIPS compares."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in VGG16_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        for k in range(5):
            part = nn.Sequential()
            for idx in range(SLICE_BOUNDS[k], SLICE_BOUNDS[k + 1]):
                part.add_module(str(idx), layers[idx])
            setattr(self, f"slice{k + 1}", part)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            outs.append(x)
        return outs


def torchvision_to_slices(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys of a VGG16 file -> `VGG16Features` keys. Accepts torchvision's `features.N.*`
    (classifier keys dropped) and our own `sliceK.N.*` / `net.sliceK.N.*`."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("net.")
        if key.startswith("slice"):
            out[key] = value
            continue
        if not key.startswith("features."):
            continue
        idx_str, _, param = key[len("features."):].partition(".")
        idx = int(idx_str)
        if idx >= SLICE_BOUNDS[-1]:
            continue
        k = next(i for i in range(5) if SLICE_BOUNDS[i] <= idx < SLICE_BOUNDS[i + 1])
        out[f"slice{k + 1}.{idx}.{param}"] = value
    return out


def load_tensor_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a safetensors file or a tensors-only torch file (weights_only)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise LPIPSWeightsError(f"cannot read weights from {path}: {type(err).__name__}: {err}") from err
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise LPIPSWeightsError(f"{path} does not hold a state dict")
    return sd


def _hub_checkpoint(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _torchmetrics_lin_file() -> Path | None:
    spec = importlib.util.find_spec("torchmetrics")  # locate the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "functional" / "image" / "lpips_models" / "vgg.pth"
        if candidate.is_file():
            return candidate
    return None


def _find_or_download(what: str, explicit: str | os.PathLike | None, env: str, cached: Path,
                      url: str, download: bool, extra: Path | None = None,
                      hash_prefix: str | None = None) -> tuple[Path | None, str]:
    """First existing file among explicit path, $env, `extra`, the hub cache; else download."""
    for candidate, source in ((explicit, "argument"), (os.environ.get(env), f"${env}")):
        if candidate:
            if not Path(candidate).is_file():
                raise LPIPSWeightsError(f"{what}: {source} names {candidate}, which is not a file")
            return Path(candidate), ""
    for candidate in (extra, cached):
        if candidate is not None and candidate.is_file():
            return candidate, ""
    if not download or os.environ.get(OFFLINE_ENV) == "1":
        return None, "downloading is disabled" + (f" (${OFFLINE_ENV}=1)" if download else "")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s from %s to %s", what, url, cached)
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=hash_prefix, progress=False)
        return cached, ""
    except Exception as err:  # noqa: BLE001 - offline machines: report, then fail with instructions
        return None, f"download from {url} failed: {type(err).__name__}: {err}"


def resolve_vgg16_path(vgg_path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of the ImageNet VGG16 weights, or LPIPSWeightsError saying how to provide them."""
    cached = _hub_checkpoint(VGG16_FILENAME)
    path, why = _find_or_download("VGG16 weights", vgg_path, VGG16_ENV, cached, VGG16_URL,
                                  download, hash_prefix="397923af")
    if path is None:
        raise LPIPSWeightsError(
            f"LPIPS needs the ImageNet VGG16 weights ({VGG16_FILENAME}) and none were found ({why}). "
            f"Provide them with vgg_path= (in a loss config: lpips_vgg_path), or set "
            f"{VGG16_ENV}=/path/to/{VGG16_FILENAME}, or put the file at {cached} "
            f"(download it from {VGG16_URL}). To train without the perceptual term, set "
            f"perceptual_weight: 0 in the loss config.")
    return path


def resolve_lin_path(lin_path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of the LPIPS linear-head weights, or LPIPSWeightsError saying how to provide them."""
    cached = _hub_checkpoint(LPIPS_LIN_FILENAME)
    path, why = _find_or_download("LPIPS linear heads", lin_path, LPIPS_LIN_ENV, cached, LPIPS_LIN_URL,
                                  download, extra=_torchmetrics_lin_file())
    if path is None:
        raise LPIPSWeightsError(
            f"LPIPS needs its linear-head weights (vgg.pth, keys lin0.model.1.weight ...) and none "
            f"were found ({why}). Install torchmetrics (its wheel ships the file), or pass lin_path= "
            f"(in a loss config: lpips_lin_path), or set {LPIPS_LIN_ENV}=/path/to/vgg.pth, or put "
            f"it at {cached} (download it from {LPIPS_LIN_URL}).")
    return path


def normalize_tensor(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit-normalise feature vectors along the channel axis."""
    return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance between two image batches in [-1, 1]; returns [B, 1, 1, 1].

    All parameters are frozen. The losses build it in eval mode, and Lightning 2 keeps that
    mode during fit (it warns that these modules are in eval mode: intended), so the value is
    deterministic. Lightning 1.x, which trained the released models, switched it to train
    mode, where the heads' dropout adds noise of zero mean; `.train()` restores that behaviour.

    Args:
        use_dropout: dropout before each linear head (the released setting).
        vgg_path: VGG16 weights file (see the module docstring for the search order).
        lin_path: linear-head weights file.
        download: allow downloading missing files into the torch hub cache.
    """

    def __init__(self, use_dropout: bool = True, vgg_path: str | None = None,
                 lin_path: str | None = None, download: bool = True):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.chns = list(LPIPS_CHANNELS)
        self.net = VGG16Features()
        for i, c in enumerate(self.chns):
            setattr(self, f"lin{i}", NetLinLayer(c, use_dropout=use_dropout))
        self.load_weights(vgg_path, lin_path, download)
        for p in self.parameters():
            p.requires_grad = False

    def load_weights(self, vgg_path: str | None = None, lin_path: str | None = None,
                     download: bool = True) -> None:
        """Load the VGG16 backbone and the linear heads; LPIPSWeightsError when unavailable."""
        vgg_file = resolve_vgg16_path(vgg_path, download)
        self._load_part(self.net, torchvision_to_slices(load_tensor_file(vgg_file)), vgg_file)
        lin_file = resolve_lin_path(lin_path, download)
        lin_sd = {k: v for k, v in load_tensor_file(lin_file).items() if k.startswith("lin")}
        lins = nn.ModuleDict({f"lin{i}": getattr(self, f"lin{i}") for i in range(len(self.chns))})
        self._load_part(lins, lin_sd, lin_file)
        logger.info("loaded LPIPS weights: VGG16 from %s, heads from %s", vgg_file, lin_file)

    @staticmethod
    def _load_part(module: nn.Module, sd: dict[str, Tensor], path: Path) -> None:
        expected = module.state_dict()
        missing = [k for k in expected if k not in sd]
        wrong = [f"{k} {list(sd[k].shape)} (expected {list(v.shape)})"
                 for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
        if missing or wrong:
            raise LPIPSWeightsError(
                f"{path} is not a usable LPIPS weights file: "
                + (f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}" if missing else "")
                + (f" wrong shapes {wrong[:3]}" if wrong else ""))
        module.load_state_dict({k: sd[k].float() for k in expected}, strict=True)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        feats = self.net(self.scaling_layer(torch.cat([input, target], dim=0)))
        val = None
        for kk, feat in enumerate(feats):
            f0, f1 = feat.chunk(2, dim=0)
            diff = (normalize_tensor(f0) - normalize_tensor(f1)) ** 2
            res = getattr(self, f"lin{kk}").model(diff).mean(dim=[2, 3], keepdim=True)
            val = res if val is None else val + res
        return val
