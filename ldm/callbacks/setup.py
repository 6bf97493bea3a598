"""`SetupCallback`: creates the log-dir layout and saves the merged configs (rank 0 only)."""
from __future__ import annotations

import logging
import os

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)


class SetupCallback(pl.Callback):
    """Make `logdir/{checkpoints,configs,images/train,images/val}` and write the configs.

    Args:
        resume: whether this run resumes an earlier one (then the folders exist already).
        now: the run's time stamp, used in the config file names.
        logdir, ckptdir, cfgdir: the run's folders.
        config: the merged project config (saved as `<now>-project.yaml`).
        lightning_config: the `lightning` section (saved as `<now>-lightning.yaml`).
    """

    def __init__(self, resume: bool, now: str, logdir: str, ckptdir: str, cfgdir: str,
                 config: DictConfig, lightning_config: DictConfig):
        super().__init__()
        self.resume = resume
        self.now = now
        self.logdir = logdir
        self.ckptdir = ckptdir
        self.cfgdir = cfgdir
        self.config = config
        self.lightning_config = lightning_config

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        for folder in (self.logdir, self.ckptdir, self.cfgdir,
                       os.path.join(self.logdir, "images", "train"), os.path.join(self.logdir, "images", "val")):
            os.makedirs(folder, exist_ok=True)
        logger.info("Project config\n%s", OmegaConf.to_yaml(self.config))
        OmegaConf.save(self.config, os.path.join(self.cfgdir, f"{self.now}-project.yaml"))
        logger.info("Lightning config\n%s", OmegaConf.to_yaml(self.lightning_config))
        OmegaConf.save(OmegaConf.create({"lightning": self.lightning_config}),
                       os.path.join(self.cfgdir, f"{self.now}-lightning.yaml"))
