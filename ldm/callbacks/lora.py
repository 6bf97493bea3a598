"""`LoRACallback`: fine-tune only LoRA adapters of a model, enabled from the config.

    lightning:
      callbacks:
        lora:
          target: ldm.callbacks.lora.LoRACallback
          params: {rank: 4, alpha: 4, target_modules: [to_q, to_k, to_v, to_out.0]}

In `setup` (before Lightning restores a resumed checkpoint, so LoRA keys resume too) it wraps
the target layers under `root` (default the UNet, `model.diffusion_model`), freezes every
other parameter of the LightningModule and, when the module keeps an EMA (`use_ema`),
rebuilds it over the trainable LoRA weights only. Every time Lightning saves a checkpoint it
also writes the adapter weights alone to `<checkpoint dir>/lora-last.safetensors` (and
`lora-step=<N>.safetensors` when `keep_every_save`). Gradient checkpointing and bf16 need
nothing special: the adapters are ordinary parameters inside the same layers.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from ldm.modules.lora import (
    DEFAULT_TARGETS,
    freeze_all_but_lora,
    inject_lora,
    load_lora,
    lora_modules,
    save_lora,
)

logger = logging.getLogger(__name__)


class LoRACallback(Callback):
    """Add LoRA adapters at setup, train only them, save them as safetensors.

    Args:
        rank: r, the inner dimension of each low-rank update.
        alpha: scale numerator; the update is multiplied by alpha / rank (default: rank).
        target_modules: module-name suffixes to wrap (Linear or 1x1 Conv2d).
        dropout: dropout on the adapter input during training.
        root: dotted path of the submodule to adapt inside the LightningModule.
        init_from: a LoRA `.safetensors` file to start from (continue a LoRA fine-tune).
        keep_every_save: also keep one `lora-step=<N>.safetensors` per checkpoint save.
    """

    def __init__(self, rank: int = 4, alpha: float | None = None,
                 target_modules: Sequence[str] = DEFAULT_TARGETS, dropout: float = 0.0,
                 root: str = "model.diffusion_model", init_from: str | None = None,
                 keep_every_save: bool = False):
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(alpha) if alpha is not None else float(rank)
        self.target_modules = tuple(target_modules)
        self.dropout = float(dropout)
        self.root = root
        self.init_from = init_from
        self.keep_every_save = keep_every_save

    @property
    def state_key(self) -> str:
        return self._generate_state_key(rank=self.rank, alpha=self.alpha, targets=self.target_modules)

    def apply(self, pl_module: pl.LightningModule) -> int:
        """Wrap, freeze and rebuild the EMA; returns the number of trainable parameters."""
        root = pl_module.get_submodule(self.root) if self.root else pl_module
        if not lora_modules(root):
            wrapped = inject_lora(root, self.rank, self.alpha, self.target_modules, self.dropout)
            logger.info("LoRA: wrapped %d layers of %s (rank %d, alpha %g)", len(wrapped),
                        self.root or type(pl_module).__name__, self.rank, self.alpha)
            if self.init_from:
                load_lora(root, self.init_from)
                logger.info("LoRA: weights from %s", self.init_from)
        trainable = freeze_all_but_lora(pl_module)
        if getattr(pl_module, "use_ema", False) and hasattr(pl_module, "model_ema"):
            from ldm.modules.ema import LitEma

            decay = float(pl_module.model_ema.decay)
            ema_target = getattr(pl_module, "model", pl_module)
            pl_module.model_ema = LitEma(ema_target, decay=decay)
            logger.info("LoRA: EMA rebuilt over the %d LoRA tensors", len(pl_module.model_ema.m_name2s_name))
        logger.info("LoRA: %d trainable parameters", trainable)
        return trainable

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.apply(pl_module)

    def _save_dir(self, trainer: pl.Trainer) -> str:
        ckpt_cb = getattr(trainer, "checkpoint_callback", None)
        dirpath = getattr(ckpt_cb, "dirpath", None)
        return dirpath or os.path.join(trainer.default_root_dir, "checkpoints")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if not trainer.is_global_zero:
            return
        root = pl_module.get_submodule(self.root) if self.root else pl_module
        folder = self._save_dir(trainer)
        os.makedirs(folder, exist_ok=True)
        meta = {"global_step": trainer.global_step, "lora_root": self.root}
        save_lora(root, os.path.join(folder, "lora-last.safetensors"), meta)
        if self.keep_every_save:
            save_lora(root, os.path.join(folder, f"lora-step={trainer.global_step:06d}.safetensors"), meta)
