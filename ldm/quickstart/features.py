"""A small feature network for FID and precision/recall on the built-in scenes, trained here.

Inception-v3 weights cannot be downloaded on an offline machine, so the quickstart measures FID
and precision/recall in the feature space of a small CNN trained on rendered scenes to
recognise what is in them: which of the 36 (colour, shape) classes occur, how many objects there
are, and the kind of background. Its pooled penultimate activations are the features; they are
sensitive to exactly what the scenes vary in. Numbers in this space are comparable only with
each other (same network, same data), not with the paper's Inception FIDs.

The quickstart uses the network shipped in `models/quickstart/scenes_features.pt`, trained on its
scenes by

    python -m ldm.quickstart.features --config configs/quickstart/txt2img.yaml --steps 3000 \
        --out models/quickstart/scenes_features.pt

so that its FIDs are comparable from run to run (it trains a new one where the scenes of the
config differ from those the shipped network was trained on). Use a network with the metrics
of `ldm.eval` as `ScenesFeatureExtractor(checkpoint)`, or by import path as
`build_feature_extractor("ldm.quickstart.features.ScenesFeatureExtractor", checkpoint=...)`.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldm.data.scene_render import BACKGROUNDS
from ldm.data.scenes import MAX_OBJECTS, NUM_CLASSES, Scenes, render_scene
from ldm.eval.features import FeatureExtractor, check_uint8_batch
from ldm.optim import build_adam

logger = logging.getLogger(__name__)


class ScenesNet(nn.Module):
    """Conv net on 32x32 RGB in [-1, 1]: features [B, feature_dim] and attribute logits.

    Args:
        width: channels of the first conv block (doubled at each of the three downsamplings).
        feature_dim: size of the feature vector.
        input_size: images are resized (area / bilinear) to this side first.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, input_size: int = 32):
        super().__init__()
        self.input_size = input_size
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                       nn.Conv2d(out, out, 3, padding=1, stride=2), nn.GroupNorm(8, out), nn.SiLU()]
            channels = out
        self.body = nn.Sequential(*layers)
        self.project = nn.Linear(channels * 4, feature_dim)  # [mean, max] pooling of two halves
        self.heads = nn.ModuleDict({
            "classes": nn.Linear(feature_dim, NUM_CLASSES),  # multi-label: which classes occur
            "count": nn.Linear(feature_dim, MAX_OBJECTS),     # how many objects (1..3)
            "background": nn.Linear(feature_dim, len(BACKGROUNDS)),
        })

    def features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, feature_dim]."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            mode = "area" if x.shape[-1] > self.input_size else "bilinear"
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=mode)
        h = self.body(x)
        top, bottom = h.chunk(2, dim=2)  # keep coarse layout: pool the upper and lower halves apart
        pooled = [t.mean(dim=(2, 3)) for t in (top, bottom)] + [t.amax(dim=(2, 3)) for t in (top, bottom)]
        return F.silu(self.project(torch.cat(pooled, dim=1)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.features(x)
        return {"features": f, **{name: head(f) for name, head in self.heads.items()}}


def scene_targets(dataset: Scenes, indices: np.ndarray) -> tuple[Tensor, dict[str, Tensor]]:
    """Rendered images [B, 3, H, W] in [-1, 1] and the attribute targets of scenes `indices`."""
    images, classes, count, background = [], [], [], []
    for i in indices:
        scene = dataset.scene(int(i))
        images.append(render_scene(scene, dataset.size)[0])
        target = np.zeros(NUM_CLASSES, dtype=np.float32)
        target[[o.class_label for o in scene.objects]] = 1.0
        classes.append(target)
        count.append(len(scene.objects) - 1)
        background.append(BACKGROUNDS.index(scene.background.kind))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, {"classes": torch.from_numpy(np.stack(classes)), "count": torch.tensor(count),
               "background": torch.tensor(background)}


def train_feature_network(out: str | Path, steps: int = 600, batch_size: int = 128, size: int = 32,
                          max_objects: int = 3, lr: float = 2e-3, seed: int = 0,
                          log_every: int = 100, **scene_options: Any) -> dict[str, float]:
    """Train `ScenesNet` on the scenes' train split, save it to `out` (weights + settings), and
    return its accuracies on 512 validation scenes. `scene_options` are further `Scenes`
    arguments (`object_size`, `backgrounds`), to match the scenes it will be used on."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = Scenes(size=size, split="train", max_objects=max_objects, **scene_options)
    val = Scenes(size=size, split="validation", max_objects=max_objects, **scene_options)
    net = ScenesNet(input_size=size)
    opt = build_adam(torch.optim.AdamW, net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start = time.time()
    for step in range(1, steps + 1):
        x, target = scene_targets(train, rng.integers(0, len(train), size=batch_size))
        out_ = net(x)
        loss = (F.binary_cross_entropy_with_logits(out_["classes"], target["classes"])
                * NUM_CLASSES / MAX_OBJECTS
                + F.cross_entropy(out_["count"], target["count"])
                + F.cross_entropy(out_["background"], target["background"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            logger.info("feature network step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(), time.time() - start)
    metrics = evaluate_feature_network(net, val)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    scenes = {"size": size, "max_objects": max_objects, **scene_options}
    torch.save({"state_dict": net.state_dict(), "input_size": size, "metrics": metrics,
                "steps": steps, "scenes": _plain(scenes)}, path)
    logger.info("feature network saved to %s: %s", path, metrics)
    return metrics


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Scene options as plain JSON values (tuples become lists), for storing and comparing."""
    return json.loads(json.dumps(options))


def trained_on(checkpoint: str | Path, size: int, max_objects: int, **scene_options: Any) -> bool:
    """Whether the network in `checkpoint` was trained on scenes with exactly these options
    (False where the file is missing or records no options)."""
    path = Path(checkpoint)
    if not path.is_file():
        return False
    stored = torch.load(path, map_location="cpu", weights_only=True).get("scenes")
    return stored == _plain({"size": size, "max_objects": max_objects, **scene_options})


@torch.no_grad()
def evaluate_feature_network(net: ScenesNet, dataset: Scenes, n: int = 512) -> dict[str, float]:
    """Exact-set accuracy of the class predictions, count and background accuracy on `n` scenes."""
    net.eval()
    x, target = scene_targets(dataset, np.arange(min(n, len(dataset))))
    out = net(x)
    exact = ((out["classes"] > 0).float() == target["classes"]).all(dim=1).float().mean().item()
    count = (out["count"].argmax(1) == target["count"]).float().mean().item()
    background = (out["background"].argmax(1) == target["background"]).float().mean().item()
    net.train()
    return {"classes_exact": exact, "count": count, "background": background}


class ScenesFeatureExtractor(FeatureExtractor):
    """`ldm.eval` feature extractor backed by a trained `ScenesNet` checkpoint.

    Args:
        checkpoint: file written by `train_feature_network`.
    """

    name = "scenes-cnn"
    provides_logits = True

    def __init__(self, checkpoint: str | Path):
        super().__init__()
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.net = ScenesNet(input_size=int(state.get("input_size", 32)))
        self.net.load_state_dict(state["state_dict"])
        self.feature_dim = self.net.project.out_features

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = check_uint8_batch(images).float() / 127.5 - 1.0
        out = self.net(x)
        return {"features": out["features"], "logits": out["classes"]}


@torch.no_grad()
def image_features(extractor: ScenesFeatureExtractor, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Features [N, D] of uint8 images [N, H, W, 3]."""
    extractor.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
        chunks.append(extractor(batch.contiguous())["features"].numpy())
    return np.concatenate(chunks).astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the scenes feature network for FID / precision-recall.")
    parser.add_argument("--out", required=True, help="checkpoint file to write")
    parser.add_argument("--config", help="train on the scenes of this config's train data (size, objects, "
                                         "backgrounds), e.g. configs/quickstart/txt2img.yaml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=32, help="image side (without --config)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    scenes: dict[str, Any] = {"size": args.size}
    if args.config:
        from ldm.quickstart.evaluation import scene_options

        scenes = scene_options(args.config)
    metrics = train_feature_network(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                    **scenes)
    logger.info("validation: %s", " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
