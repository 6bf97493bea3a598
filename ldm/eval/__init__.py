"""Evaluation of generative models with the paper's protocols (FID, KID, IS, PR, PSNR/SSIM,
LPIPS, CLIP score). Heavy pieces (Inception weights, CLIP, LPIPS, Lightning) load on use.

    from ldm.eval import evaluate, EvalConfig
    evaluate("samples/", "reference/", "fid,kid,isc,prc", EvalConfig(cache_dir="~/.cache/ldm/eval_stats"))
"""
from ldm.eval.features import FeatureExtractor, PixelFeatureExtractor, build_feature_extractor, extract_features
from ldm.eval.fid import FeatureStats, fid_from_features, fid_from_stats, frechet_distance, load_or_compute_stats
from ldm.eval.images import DatasetSource, FolderSource, ImageSource, InputError, NpzSource, open_image_source
from ldm.eval.inception_score import inception_score
from ldm.eval.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from ldm.eval.precision_recall import manifold_radii, precision_recall
from ldm.eval.presets import PRESETS, EvalPreset, get_preset
from ldm.eval.psnr_ssim import psnr, ssim
from ldm.eval.resize import resize_bilinear_tf1
from ldm.eval.runner import METRICS, EvalConfig, evaluate, parse_metrics

__all__ = [
    "DatasetSource", "EvalConfig", "EvalPreset", "FeatureExtractor", "FeatureStats",
    "FolderSource", "ImageSource", "InputError", "METRICS", "NpzSource", "PRESETS",
    "PixelFeatureExtractor", "build_feature_extractor", "evaluate", "extract_features",
    "fid_from_features", "fid_from_stats", "frechet_distance", "get_preset", "inception_score",
    "kernel_inception_distance", "load_or_compute_stats", "manifold_radii", "mmd2_unbiased",
    "open_image_source", "parse_metrics", "polynomial_kernel", "precision_recall", "psnr",
    "resize_bilinear_tf1", "ssim",
]
