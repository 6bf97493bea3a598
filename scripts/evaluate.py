#!/usr/bin/env python
"""Evaluate generated images: FID, KID, Inception Score, precision/recall, PSNR, SSIM, LPIPS, CLIP.

    python scripts/evaluate.py SAMPLES REFERENCE --metrics fid,kid,isc,prc
    python scripts/evaluate.py samples/celeba256 --preset celebahq256
    python scripts/evaluate.py --list-presets

SAMPLES and REFERENCE are folders of images, `.npz` sample files (or folders of them), data-set
configs (YAML), or FID statistics (`.npz` with mu/sigma; FID only). Results are written as JSON
(--output) and printed as a table. Bad input prints one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldm.eval.images import InputError  # noqa: E402
from ldm.eval.inception import WeightsError, default_cache_dir  # noqa: E402
from ldm.eval.presets import PRESETS, get_preset  # noqa: E402
from ldm.eval.runner import METRIC_ALIASES, METRICS, EvalConfig, evaluate, parse_metrics  # noqa: E402

logger = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("samples", nargs="?", help="generated images: folder, .npz, data-set YAML or stats .npz")
    p.add_argument("reference", nargs="?", help="reference images (default: the preset's data set)")
    p.add_argument("--metrics", help=f"comma-separated: {', '.join(METRICS)} "
                   f"(aliases {', '.join(METRIC_ALIASES)}); default: the preset's, else fid")
    p.add_argument("--preset", choices=sorted(PRESETS), help="the paper's protocol for a table row")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--output", default="evaluation.json", help="JSON file for the results")
    p.add_argument("--num-samples", type=int, help="use the first N samples (default: preset's, else all)")
    p.add_argument("--num-reference", type=int, help="use the first N reference images (default: all)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default=None, help="cuda if available, else cpu")
    p.add_argument("--feature-extractor", default="inception-v3-compat",
                   help="inception-v3-compat (the paper's), pixels (smoke tests only), or an import path")
    p.add_argument("--inception-weights", help="local pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--weights-dir", help=f"where weights are cached/downloaded (default {default_cache_dir()})")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    p.add_argument("--cache-dir", default=str(default_cache_dir() / "eval_stats"),
                   help="cache of reference statistics")
    p.add_argument("--no-cache", action="store_true", help="do not cache reference statistics")
    p.add_argument("--save-stats", help="also write the reference statistics (with features) here")
    p.add_argument("--split", default=None,
                   help="data.params.<split> of a training config (default: the preset's, else validation)")
    p.add_argument("--image-key", default="image", help="image key of data-set items")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--isc-splits", type=int, default=10)
    p.add_argument("--prc-k", type=int, default=3, help="neighbourhood size of precision/recall")
    p.add_argument("--seed", type=int, default=2020, help="seed of KID subsets and IS shuffling")
    p.add_argument("--captions", help="text file with one caption per sample (CLIP score)")
    p.add_argument("--clip-model", help="CLIP model folder or hub name (default openai/clip-vit-large-patch14)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def print_presets() -> None:
    for preset in PRESETS.values():
        print(f"{preset.name:22s} {preset.table:8s} {','.join(preset.metrics):18s} "
              f"n={preset.num_samples:<6d} {preset.description}")


def format_table(results: dict) -> str:
    width = max(len(k) for k in results)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    for key, value in results.items():
        text = f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    import torch

    preset = get_preset(args.preset) if args.preset else None
    if args.samples is None:
        raise InputError("no SAMPLES given (see --help)")
    metrics = parse_metrics(args.metrics or (",".join(preset.metrics) if preset else "fid"))
    reference = args.reference
    split = args.split or (preset.reference_split if preset else "validation")
    if reference is None and preset is not None and preset.reference_config is not None:
        reference = preset.reference_config
        logger.info("reference: %s", preset.reference)
    num_samples = args.num_samples or (preset.num_samples if preset else None)
    config = EvalConfig(
        batch_size=args.batch_size, num_samples=num_samples, num_reference=args.num_reference,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        feature_extractor=args.feature_extractor, inception_weights=args.inception_weights,
        weights_cache_dir=args.weights_dir, download=not args.no_download,
        cache_dir=None if args.no_cache else args.cache_dir, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, isc_splits=args.isc_splits, prc_k=args.prc_k,
        seed=args.seed, split=split, image_key=args.image_key, clip_model=args.clip_model)
    if args.captions:
        path = Path(args.captions)
        if not path.is_file():
            raise InputError(f"captions file not found: {path}")
        config.captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    results = evaluate(args.samples, reference, metrics, config, save_reference_stats=args.save_stats)
    if preset is not None and results.get("num_samples", num_samples) < preset.num_samples:
        logger.warning("preset %s uses %d samples; these results use %s and are not comparable "
                       "with the paper", preset.name, preset.num_samples, results.get("num_samples"))
    return {"metrics": results, "samples": str(args.samples),
            "reference": reference if isinstance(reference, dict) else str(reference),
            "preset": preset.name if preset else None,
            "paper": preset.paper if preset else None,
            "feature_extractor": config.feature_extractor,
            "options": {k: v for k, v in vars(config).items() if k != "captions"}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.list_presets:
        print_presets()
        return 0
    try:
        report = run(args)
    except (InputError, WeightsError, ValueError, KeyError) as err:
        message = str(err).strip("'\"").splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(format_table(report["metrics"]))
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
