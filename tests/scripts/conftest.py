"""Tiny models for the script tests, written as a config YAML plus a checkpoint in the released
layout (`{'state_dict': ..., 'global_step': 0}`), and a helper that runs a script's `main`.

Every model has a 2x first stage and a 2-level UNet on 8x8 latents (16x16 images), so a script
run takes well under a second per sampling call on CPU.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
LATENT = 8  # training latent size; images are 16x16


def load_script(name: str):
    """Import scripts/<name>.py as a module (its `main(argv)` is what the CLI runs)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unet(in_channels: int, out_channels: int, context_dim: int | None = None, num_classes: int | None = None) -> dict:
    params = {"image_size": LATENT, "in_channels": in_channels, "out_channels": out_channels, "model_channels": 32,
              "attention_resolutions": [], "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 2,
              "legacy": False}
    if context_dim is not None:
        params.update(use_spatial_transformer=True, transformer_depth=1, context_dim=context_dim)
    if num_classes is not None:
        params["num_classes"] = num_classes
    return {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": params}


def autoencoder(kind: str) -> dict:
    dd = {"double_z": kind == "kl", "z_channels": 4 if kind == "kl" else 3, "resolution": 16, "in_channels": 3,
          "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    loss = {"target": "torch.nn.Identity"}
    if kind == "kl":
        return {"target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {"embed_dim": 4, "ddconfig": dd, "lossconfig": loss}}
    return {"target": "ldm.models.autoencoder.VQModelInterface",
            "params": {"embed_dim": 3, "n_embed": 64, "ddconfig": dd, "lossconfig": loss}}


def ldm(channels: int, first_stage: dict, unet_config: dict, cond_stage, **extra) -> dict:
    params = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "first_stage_key": "image",
              "image_size": LATENT, "channels": channels, "use_ema": False, "scale_factor": 1.0,
              "unet_config": unet_config, "first_stage_config": first_stage, "cond_stage_config": cond_stage}
    params.update(extra)
    return {"model": {"base_learning_rate": 1e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                      "params": params}}


def write_vocab(folder: Path) -> Path:
    """A WordPiece vocabulary of 1,100 tokens (BertTokenizerFast reads it offline)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    words += ["a", "red", "blue", "green", "circle", "square", "painting", "of", "cat", "dog", "virus", "monster"]
    words += [f"tok{i}" for i in range(1100 - len(words))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def tiny_configs(tmp: Path) -> dict[str, dict]:
    vocab = str(write_vocab(tmp / "vocab"))
    bert = {"target": "ldm.modules.encoders.modules.BERTEmbedder",
            "params": {"n_embed": 32, "n_layer": 1, "vocab_size": 1100, "max_seq_len": 8,
                       "tokenizer_version": vocab}}
    layout_bert = {"target": "ldm.modules.encoders.modules.BERTEmbedder",
                   "params": {"n_embed": 32, "n_layer": 1, "vocab_size": 64, "max_seq_len": 3 * 4 + 2,
                              "use_tokenizer": False}}
    return {
        "txt2img": ldm(4, autoencoder("kl"), unet(4, 4, context_dim=32), bert, cond_stage_key="caption",
                       conditioning_key="crossattn", cond_stage_trainable=True, scale_factor=0.5),
        "inpaint": ldm(3, autoencoder("vq"), unet(7, 3), "__is_first_stage__", cond_stage_key="masked_image",
                       concat_mode=True),
        "uncond": ldm(3, autoencoder("vq"), unet(3, 3), "__is_unconditional__", cond_stage_key="image",
                      timesteps=50),  # short, so that the ancestral sampler (-v) runs quickly
        "classcond": ldm(3, autoencoder("vq"), unet(3, 3, context_dim=32),
                         {"target": "ldm.modules.encoders.modules.ClassEmbedder",
                          "params": {"embed_dim": 32, "n_classes": 5, "key": "class_label"}},
                         cond_stage_key="class_label", conditioning_key="crossattn", cond_stage_trainable=True),
        "superres": ldm(3, autoencoder("vq"), unet(6, 3), {"target": "torch.nn.Identity"},
                        cond_stage_key="LR_image", concat_mode=True),
        "layout": ldm(3, autoencoder("vq"), unet(3, 3, context_dim=32), layout_bert,
                      cond_stage_key="coordinates_bbox", conditioning_key="crossattn", cond_stage_trainable=True),
        "semantic": ldm(3, autoencoder("vq"), unet(6, 3),
                        {"target": "ldm.modules.encoders.modules.SpatialRescaler",
                         "params": {"n_stages": 1, "in_channels": 5, "out_channels": 3}},
                        cond_stage_key="segmentation", concat_mode=True, cond_stage_trainable=True),
    }


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised layers small random weights, so that outputs depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """name -> (config path, checkpoint path) of every tiny model."""
    from ldm.util import instantiate_from_config

    tmp = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for name, cfg in tiny_configs(tmp).items():
        torch.manual_seed(0)
        config = OmegaConf.create(cfg)
        model = instantiate_from_config(config.model)
        randomize_(model)
        folder = tmp / name
        folder.mkdir()
        OmegaConf.save(config, folder / "config.yaml")
        torch.save({"state_dict": model.state_dict(), "global_step": 0}, folder / "model.ckpt")
        out[name] = (str(folder / "config.yaml"), str(folder / "model.ckpt"))
    return out


@pytest.fixture
def run_cli():
    """run_cli(script, args) -> (exit code, stderr) for error paths, in-process."""
    def run(script: str, args: list[str]):
        from ldm.sampling_utils import run_script

        module = load_script(script)
        import io
        from contextlib import redirect_stderr

        err = io.StringIO()
        with redirect_stderr(err):
            try:
                code = run_script(module.main, args, prog=f"{script}.py")
            except SystemExit as exit_:  # argparse
                code = exit_.code
        return code, err.getvalue()
    return run


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


