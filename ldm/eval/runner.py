"""`evaluate()`: compute the requested metrics between a sample set and a reference set.

Inputs on either side: a folder of images, an `.npz` of samples, a data-set config, an
`ImageSource`, or FID statistics (an `.npz` with `mu`/`sigma`, or a `FeatureStats`). Feature
metrics (FID, KID, IS, precision/recall) run one feature extractor over both sides; the
reference side's statistics are cached as `.npz` under `cache_dir` so that they are computed
once. Paired metrics (PSNR, SSIM, LPIPS) compare the i-th sample with the i-th reference image.
The CLI (`scripts/evaluate.py`) and the training callback are thin layers over this module.
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ldm.eval.features import FeatureExtractor, build_feature_extractor, extract_features
from ldm.eval.fid import FeatureStats, fid_from_stats, load_or_compute_stats
from ldm.eval.images import ImageSource, InputError, is_stats_file, open_image_source

logger = logging.getLogger(__name__)

FEATURE_METRICS = ("fid", "kid", "isc", "prc")
PAIRED_METRICS = ("psnr", "ssim", "lpips")
METRICS = FEATURE_METRICS + PAIRED_METRICS + ("clip",)
METRIC_ALIASES = {"is": "isc", "inception_score": "isc", "pr": "prc",
                  "precision_recall": "prc", "clip_score": "clip"}

Input = Union[str, os.PathLike, Mapping, ImageSource, FeatureStats]


@dataclass
class EvalConfig:
    """Options of an evaluation run; defaults follow torch-fidelity."""

    batch_size: int = 50
    num_samples: int | None = None  # use the first N samples (None: all)
    num_reference: int | None = None  # use the first N reference images (None: all)
    device: str = "cpu"
    feature_extractor: str = "inception-v3-compat"
    inception_weights: str | None = None
    weights_cache_dir: str | None = None
    download: bool = True
    cache_dir: str | None = None  # reference statistics cache (None: no caching)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    isc_splits: int = 10
    prc_k: int = 3
    seed: int = 2020
    split: str = "validation"  # which data.params.<split> of a training config is the reference
    image_key: str = "image"
    clip_model: str | None = None
    captions: list[str] | None = None


def parse_metrics(names: str | Sequence[str]) -> list[str]:
    """Normalise "fid,kid,is" or a list into canonical metric names (unknown names raise)."""
    items = [n.strip().lower() for n in (names.split(",") if isinstance(names, str) else names)]
    result = []
    for name in filter(None, items):
        name = METRIC_ALIASES.get(name, name)
        if name not in METRICS:
            raise InputError(f"unknown metric '{name}' (known: {', '.join(METRICS)}, "
                             f"aliases: {', '.join(METRIC_ALIASES)})")
        if name not in result:
            result.append(name)
    if not result:
        raise InputError("no metrics requested")
    return result


def _open(spec: Input, config: EvalConfig) -> ImageSource | FeatureStats:
    if isinstance(spec, (ImageSource, FeatureStats)):
        return spec
    if isinstance(spec, (str, os.PathLike)) and str(spec).lower().endswith(".npz") \
            and Path(spec).is_file() and is_stats_file(spec):
        try:
            return FeatureStats.load(spec)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read statistics {spec}: {err}") from err
    return open_image_source(spec, config.split, config.image_key)


class _Evaluation:
    """State of one `evaluate` call: opened inputs and a lazily built feature extractor."""

    def __init__(self, config: EvalConfig, extractor: FeatureExtractor | None) -> None:
        self.config = config
        self._extractor = extractor

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            kwargs: dict[str, Any] = {}
            name = self.config.feature_extractor
            if name in ("inception", "inception-v3-compat"):
                kwargs = {"weights_path": self.config.inception_weights,
                          "cache_dir": self.config.weights_cache_dir,
                          "download": self.config.download}
            self._extractor = build_feature_extractor(name, **kwargs)
        return self._extractor

    def stats(self, side: ImageSource | FeatureStats, limit: int | None, need_features: bool,
              cache: bool, role: str) -> FeatureStats:
        if isinstance(side, FeatureStats):
            if need_features and side.features is None:
                raise InputError(f"the {role} statistics hold only mu/sigma; KID, IS and "
                                 "precision/recall need images or statistics saved with features")
            if side.extractor and self._extractor is not None and side.extractor != self._extractor.name:
                raise InputError(f"the {role} statistics come from '{side.extractor}', "
                                 f"not '{self._extractor.name}'")
            return side
        if limit is not None and len(side) < limit:
            logger.warning("%s has %d images, fewer than the %d requested", side.description,
                           len(side), limit)
        extractor = self.extractor
        count = len(side) if limit is None else min(limit, len(side))

        def compute() -> FeatureStats:
            logger.info("extracting %s features of %d %s images", extractor.name, count, role)
            out = extract_features(side.iter_batches(self.config.batch_size, limit), extractor,
                                   self.config.device)
            return FeatureStats.from_features(out["features"], out.get("logits"), extractor.name)

        cache_path = None
        if cache and self.config.cache_dir is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(side.description.split(" ")[0]).name)[:40]
            cache_path = Path(self.config.cache_dir).expanduser() / (
                f"{side.kind}-{slug}-{extractor.name}-n{count}-{side.fingerprint()[:16]}.npz")
        return load_or_compute_stats(cache_path, compute, need_features)


def _feature_metrics(metrics: list[str], sample_stats: FeatureStats,
                     ref_stats: FeatureStats | None, config: EvalConfig) -> dict[str, float]:
    from ldm.eval.inception_score import inception_score
    from ldm.eval.kid import kernel_inception_distance
    from ldm.eval.precision_recall import precision_recall

    results: dict[str, float] = {}
    if "fid" in metrics:
        results["fid"] = fid_from_stats(sample_stats, ref_stats)
    if "kid" in metrics:
        subset = config.kid_subset_size
        if min(len(sample_stats.features), len(ref_stats.features)) < subset:
            raise InputError(f"KID subset size {subset} exceeds the number of samples "
                             f"({len(sample_stats.features)} / {len(ref_stats.features)}); "
                             "lower --kid-subset-size")
        results["kid_mean"], results["kid_std"] = kernel_inception_distance(
            sample_stats.features, ref_stats.features, config.kid_subsets, subset, seed=config.seed)
    if "isc" in metrics:
        if sample_stats.logits is None:
            raise InputError("the Inception Score needs logits; this feature extractor has none")
        results["isc_mean"], results["isc_std"] = inception_score(
            sample_stats.logits, config.isc_splits, seed=config.seed)
    if "prc" in metrics:
        results["precision"], results["recall"] = precision_recall(
            ref_stats.features, sample_stats.features, config.prc_k, device=config.device)
    return results


def _paired_metrics(metrics: list[str], samples: ImageSource, reference: ImageSource,
                    config: EvalConfig) -> dict[str, float]:
    from ldm.eval.psnr_ssim import psnr, ssim

    n_s = len(samples) if config.num_samples is None else min(len(samples), config.num_samples)
    n_r = len(reference) if config.num_reference is None else min(len(reference), config.num_reference)
    if n_s != n_r:
        raise InputError(f"paired metrics ({', '.join(metrics)}) need as many samples as "
                         f"reference images, got {n_s} and {n_r}")
    lpips_model = None
    if "lpips" in metrics:
        from ldm.eval.lpips import build_lpips
        try:
            lpips_model = build_lpips().to(config.device)
        except (ImportError, OSError) as err:  # missing module or weights: say so in one line
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"LPIPS is unavailable: {first}") from err
    values: dict[str, list[torch.Tensor]] = {m: [] for m in metrics}
    pairs = zip(samples.iter_batches(config.batch_size, n_s),
                reference.iter_batches(config.batch_size, n_r))
    for x, y in pairs:
        if x.shape != y.shape:
            raise InputError(f"paired images differ in size: {tuple(x.shape[1:])} vs {tuple(y.shape[1:])}")
        if "psnr" in metrics:
            values["psnr"].append(psnr(x, y))
        if "ssim" in metrics:
            values["ssim"].append(ssim(x, y))
        if lpips_model is not None:
            from ldm.eval.lpips import lpips_distance
            values["lpips"].append(lpips_distance(x, y, lpips_model, config.device).double().cpu())
    results = {}
    for name, chunks in values.items():
        v = torch.cat(chunks).numpy()
        finite = v[np.isfinite(v)]  # identical pairs have infinite PSNR; report them separately
        results[name] = float(finite.mean()) if len(finite) else math.inf
        results[f"{name}_std"] = float(finite.std()) if len(finite) else 0.0
        if name == "psnr" and len(finite) < len(v):
            results["psnr_identical_pairs"] = int(len(v) - len(finite))
    return results


def _clip_metric(samples: ImageSource, config: EvalConfig) -> dict[str, float]:
    from ldm.eval.clip_score import DEFAULT_CLIP_MODEL, CLIPScorer

    captions = config.captions if config.captions is not None else samples.captions()
    n = len(samples) if config.num_samples is None else min(len(samples), config.num_samples)
    if captions is None or len(captions) < n:
        got = "none" if captions is None else len(captions)
        raise InputError(f"the CLIP score needs one caption per sample ({n}), got {got}: "
                         "pass --captions FILE (one per line) or same-name .txt files")
    scorer = CLIPScorer(config.clip_model or DEFAULT_CLIP_MODEL, config.device)
    scores, start = [], 0
    for batch in samples.iter_batches(config.batch_size, n):
        scores.append(scorer(batch, captions[start:start + len(batch)]))
        start += len(batch)
    values = torch.cat(scores).double().numpy()
    return {"clip_score": float(values.mean()), "clip_score_std": float(values.std())}


def evaluate(samples: Input, reference: Input | None, metrics: str | Sequence[str],
             config: EvalConfig | None = None, extractor: FeatureExtractor | None = None,
             save_reference_stats: str | os.PathLike | None = None) -> dict[str, Any]:
    """Compute `metrics` of `samples` against `reference`; returns a flat dict of numbers."""
    config = config or EvalConfig()
    metrics = parse_metrics(metrics)
    run = _Evaluation(config, extractor)
    sample_side = _open(samples, config)
    ref_side = _open(reference, config) if reference is not None else None
    needs_reference = [m for m in metrics if m not in ("isc", "clip")]
    if needs_reference and ref_side is None:
        raise InputError(f"{', '.join(needs_reference)} need a reference input")
    results: dict[str, Any] = {}
    feature = [m for m in metrics if m in FEATURE_METRICS]
    if feature:
        need_features = any(m in feature for m in ("kid", "isc", "prc"))
        sample_stats = run.stats(sample_side, config.num_samples, need_features, False, "sample")
        ref_stats = None
        if any(m != "isc" for m in feature):
            ref_stats = run.stats(ref_side, config.num_reference,
                                  any(m in feature for m in ("kid", "prc")), True, "reference")
            results["num_reference"] = ref_stats.num_samples
            if save_reference_stats is not None:
                ref_stats.save(save_reference_stats)
        results["num_samples"] = sample_stats.num_samples
        results.update(_feature_metrics(feature, sample_stats, ref_stats, config))
    paired = [m for m in metrics if m in PAIRED_METRICS]
    if paired:
        if not isinstance(sample_side, ImageSource) or not isinstance(ref_side, ImageSource):
            raise InputError(f"{', '.join(paired)} compare images pair by pair; statistics files cannot be used")
        results.update(_paired_metrics(paired, sample_side, ref_side, config))
    if "clip" in metrics:
        if not isinstance(sample_side, ImageSource):
            raise InputError("the CLIP score needs sample images, not statistics")
        results.update(_clip_metric(sample_side, config))
    return results
