"""The FID Inception v3 (TF "2015-12-05" graph, ported), with torch-fidelity's preprocessing.

Network: the Inception v3 that TensorFlow's FID code uses, as pytorch-fid ports it
(`FIDInceptionA/C/E`: average pools that ignore zero padding, and a max pool in the last
block), with the flat module layout `Conv2d_1a_3x3 ... Mixed_7c, fc` of torch-fidelity's
`FeatureExtractorInceptionV3`. Both projects' weight files (pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`, torch-fidelity's `weights-inception-...`) load
strictly; torch-fidelity's converted file lacks the BatchNorm `num_batches_tracked` counters,
which are filled with zeros (they are unused at inference).

Preprocessing (torch-fidelity, the paper's numbers): uint8 RGB -> float32 -> bilinear resize to
299x299 with TensorFlow 1.x rules (`resize.resize_bilinear_tf1`, always applied) ->
`(x - 128) / 128`. Outputs: "features" = the 2048-d pool3 activations (FID, KID, PR) and
"logits" = the 1008-way logits without the fc bias ("logits_unbiased", the Inception Score).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldm.eval.features import FeatureExtractor, check_uint8_batch
from ldm.eval.resize import resize_bilinear_tf1

logger = logging.getLogger(__name__)

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the hash prefix in the file name
INPUT_SIZE = 299


class WeightsError(RuntimeError):
    """Weights that are missing or do not fit; the message is one line and says what to do."""


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU, the unit of Inception v3."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3/1 average pool that ignores the zero padding, as TensorFlow does."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Inception A block (35x35) with TF's padding-free average pool."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """Inception C block (17x17, factorised 7x7) with TF's padding-free average pool."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Inception E block (8x8); `pool="max"` is the FID graph's last block (Mixed_7c)."""

    def __init__(self, in_channels: int, pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":  # the FID graph's quirk, kept for parity
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception v3 of the TF FID graph: normalised 299x299 input -> pool3 (2048) and logits."""

    def __init__(self, num_classes: int = 1008) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`x`: [B, 3, 299, 299] in [-1, 1]; returns "features" [B, 2048] and "logits"."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        features = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        # torch-fidelity's "logits_unbiased": the Inception Score uses the fc layer without bias
        return {"features": features, "logits": features @ self.fc.weight.T}


def default_cache_dir() -> Path:
    """`$LDM_CACHE_DIR`, else `~/.cache/ldm`: where downloaded weights are kept."""
    return Path(os.environ.get("LDM_CACHE_DIR", Path.home() / ".cache" / "ldm")).expanduser()


def _download(url: str, destination: Path, sha256_prefix: str | None) -> None:
    """Download `url` to `destination` atomically, checking the sha256 prefix when given."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".partial")
    logger.info("downloading %s -> %s", url, destination)
    torch.hub.download_url_to_file(url, str(partial), progress=False)
    if sha256_prefix:
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if not digest.startswith(sha256_prefix):
            partial.unlink(missing_ok=True)
            raise WeightsError(f"downloaded {url} has sha256 {digest[:8]}..., expected {sha256_prefix}...")
    partial.replace(destination)


def resolve_inception_weights(weights_path: str | os.PathLike | None = None,
                              cache_dir: str | os.PathLike | None = None,
                              download: bool = True) -> Path:
    """A local path if given; else the cached file, downloading it from FID_WEIGHTS_URL if allowed."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsError(f"FID Inception weights not found: no file at {path}")
        return path
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / FID_WEIGHTS_FILENAME
    if path.is_file():
        return path
    hint = (f"download {FID_WEIGHTS_URL} and pass its path (--inception-weights), "
            f"or place it at {path}")
    if not download:
        raise WeightsError(f"FID Inception weights not found at {path} (downloads disabled): {hint}")
    try:
        _download(FID_WEIGHTS_URL, path, FID_WEIGHTS_SHA256_PREFIX)
    except WeightsError:
        raise
    except Exception as err:  # network errors come in many types; all mean "not available"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(f"FID Inception weights not found at {path} and the download failed "
                           f"({reason}): {hint}") from err
    return path


def load_inception_weights(model: FIDInceptionV3, path: str | os.PathLike) -> None:
    """Load a pytorch-fid / torch-fidelity weight file strictly; one-line errors name the keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(f"cannot read FID Inception weights from {path}: {first}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():  # torch-fidelity's file has no BN counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise WeightsError(f"{path} is not an FID Inception state dict: " + "; ".join(parts))
    wrong = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        k = wrong[0]
        raise WeightsError(f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {k} "
                           f"{tuple(state[k].shape)} != {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True)


class InceptionV3FeatureExtractor(FeatureExtractor):
    """FID Inception v3 with torch-fidelity's preprocessing (the paper's FID/IS/PR features)."""

    name = "inception-v3-compat"
    feature_dim = 2048
    provides_logits = True

    def __init__(self, weights_path: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, download: bool = True,
                 load_weights: bool = True) -> None:
        """`weights_path`: a local weight file (else the cache, downloading if `download`);
        `load_weights=False` keeps random weights (tests only)."""
        super().__init__()
        self.net = FIDInceptionV3()
        if load_weights:
            path = resolve_inception_weights(weights_path, cache_dir, download)
            load_inception_weights(self.net, path)
            logger.info("loaded FID Inception weights from %s", path)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32 [B, 3, 299, 299] in [-1, 1), torch-fidelity's way."""
        x = check_uint8_batch(images).to(torch.float32)
        x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE), align_corners=False)
        return (x - 128) / 128

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(self.preprocess(images))
