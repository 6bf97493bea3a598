"""The paper's evaluation protocols (Rombach et al. 2022, Tables 1-3, 5 and 7) as presets.

A preset fixes what a table row needs: the metrics, how many samples, which reference images
(a data-set config of `ldm.data`, used when no reference is given on the command line), and
the commands that produce the samples from a released checkpoint. `scripts/evaluate.py
SAMPLES --preset NAME` applies one; `docs/evaluation.md` lists them with the paper's numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalPreset:
    """One row-type of the paper's tables: metrics, sample count and reference images."""

    name: str
    table: str
    description: str
    metrics: tuple[str, ...]
    num_samples: int
    reference: str
    reference_config: dict[str, Any] | None = None
    reference_split: str = "train"
    sample_command: str = ""
    notes: str = ""
    paper: dict[str, float] = field(default_factory=dict)


def _unconditional(name: str, title: str, target: str, ckpt: str, steps: int, eta: float,
                   model: str, paper: dict[str, float]) -> EvalPreset:
    return EvalPreset(
        name=name, table="Table 1",
        description=f"{title} 256x256, unconditional ({model}, {steps} DDIM steps, eta={eta:g})",
        metrics=("fid", "prc"), num_samples=50_000,
        reference=f"the full {title} training set at 256x256 ({target})",
        reference_config={"target": target, "params": {"size": 256}},
        sample_command=(f"python scripts/sample_diffusion.py -r models/ldm/{ckpt}/model.ckpt "
                        f"-l samples/{name} -n 50000 --batch_size 100 -c {steps} -e {eta:g}"),
        paper=paper)


PRESETS: dict[str, EvalPreset] = {p.name: p for p in (
    _unconditional("celebahq256", "CelebA-HQ", "ldm.data.faceshq.CelebAHQTrain", "celeba256",
                   200, 0.0, "LDM-VQ-4", {"fid": 5.11, "precision": 0.72, "recall": 0.49}),
    _unconditional("ffhq256", "FFHQ", "ldm.data.faceshq.FFHQTrain", "ffhq256",
                   200, 1.0, "LDM-VQ-4", {"fid": 4.98, "precision": 0.73, "recall": 0.50}),
    _unconditional("lsun_churches256", "LSUN-Churches", "ldm.data.lsun.LSUNChurchesTrain",
                   "lsun_churches256", 400, 0.0, "LDM-KL-8",
                   {"fid": 4.02, "precision": 0.64, "recall": 0.52}),
    _unconditional("lsun_bedrooms256", "LSUN-Bedrooms", "ldm.data.lsun.LSUNBedroomsTrain",
                   "lsun_beds256", 200, 1.0, "LDM-VQ-4",
                   {"fid": 2.95, "precision": 0.66, "recall": 0.48}),
    EvalPreset(
        name="imagenet256_cin", table="Table 3",
        description="ImageNet 256x256, class-conditional (LDM-VQ-8 / cin256-v2), 50 samples per class",
        metrics=("fid", "isc", "prc"), num_samples=50_000,
        reference="the ImageNet training set at 256x256, or the ADM evaluator's reference batch "
                  "VIRTUAL_imagenet256_labeled.npz (an .npz with arr_0 is read directly)",
        reference_config={"target": "ldm.data.imagenet.ImageNetTrain",
                          "params": {"config": {"size": 256}}},
        sample_command=("python scripts/sample_diffusion.py -r models/ldm/cin256-v2/model.ckpt "
                        "-l samples/imagenet256_cin -n 50000 --batch_size 50 -c 250 -e 0"),
        notes="The paper's best row (LDM-4-G) samples with classifier-free guidance scale 1.5. "
              "The model zoo's numbers in brackets come from the ADM evaluator (TensorFlow), the "
              "others from torch-fidelity, which this evaluator follows.",
        paper={"fid": 3.60}),
    EvalPreset(
        name="coco256_txt2img", table="Table 2",
        description="MS-COCO 256x256 text-to-image: 30k captions of the validation set",
        metrics=("fid", "isc"), num_samples=30_000,
        reference="30k MS-COCO validation images, centre-cropped and resized to 256x256 "
                  "(a folder), paired with the captions used for sampling",
        sample_command=("python scripts/txt2img.py --config configs/latent-diffusion/"
                        "txt2img-1p4B-eval.yaml --ckpt models/ldm/text2img-large/model.ckpt "
                        "--from-file coco_val_30k_captions.txt --outdir samples/coco256_txt2img "
                        "--n_samples 1 --n_iter 1 --H 256 --W 256 --ddim_steps 250 --scale 1.5 "
                        "--skip_grid"),
        notes="One caption per line in the same order as the reference images; add `clip` to "
              "--metrics with --captions to also report the CLIP score."),
    EvalPreset(
        name="imagenet_sr4x", table="Table 5",
        description="ImageNet x4 super-resolution 64 -> 256 (bicubic degradation, as SR3)",
        metrics=("fid", "isc", "psnr", "ssim"), num_samples=50_000,
        reference="the 50k ImageNet validation images at 256x256, in the same order as the "
                  "super-resolved samples (PSNR/SSIM are paired)",
        reference_config={"target": "ldm.data.imagenet.ImageNetValidation",
                          "params": {"config": {"size": 256}}},
        reference_split="validation",
        sample_command=("python scripts/superres.py --indir imagenet_val_64 "
                        "--outdir samples/imagenet_sr4x"),
        notes="PSNR and SSIM are computed on RGB uint8 images (data range 255). The released "
              "bsr_sr checkpoint is the OpenImages/BSR model, not the ImageNet-bicubic model of "
              "the table."),
    EvalPreset(
        name="places_inpainting512", table="Table 7",
        description="Places inpainting on 512x512 crops of test images (LaMa's masks)",
        metrics=("fid", "lpips"), num_samples=30_000,
        reference="the 30k ground-truth 512x512 crops, in the same order as the inpainted "
                  "samples (LPIPS is paired)",
        sample_command=("python scripts/inpaint.py --indir places_512_with_masks "
                        "--outdir samples/places_inpainting512"),
        notes="LPIPS uses ldm.modules.losses.lpips.LPIPS (VGG)."),
)}


def get_preset(name: str) -> EvalPreset:
    """The preset called `name`; a one-line KeyError lists the known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]
