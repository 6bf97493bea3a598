"""Latent Diffusion Models: a research framework compatible with the CompVis releases."""

__version__ = "0.1.0"
