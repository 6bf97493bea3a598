"""Write `last.ckpt` when training crashes, is interrupted (Ctrl-C) or receives SIGUSR1, and
when it ends after the last regular checkpoint.

The original `main.py` called this "melk". Rank 0 writes the file directly (no collective
barrier), because the other ranks may be gone or stuck when an exception arrives. Lightning's
ModelCheckpoint saves after validation, so a run that reaches `max_steps` between two validations
(e.g. 5592 steps with `val_check_interval: 1000`) would otherwise end with a `last.ckpt` from up
to 999 steps earlier.
"""
from __future__ import annotations

import logging
import os
import signal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

logger = logging.getLogger(__name__)


class CheckpointOnInterrupt(pl.Callback):
    """Save `<ckptdir>/last.ckpt` on an exception, on KeyboardInterrupt, on SIGUSR1 and at the end
    of training when no checkpoint holds the final step (and the run's ModelCheckpoint will not
    write one).

    Args:
        ckptdir: the run's checkpoint folder.
        signum: the signal that requests a checkpoint (SIGUSR1, as cluster schedulers send
            before a pre-emption); the checkpoint is written after the current batch.
    """

    def __init__(self, ckptdir: str, signum: int = getattr(signal, "SIGUSR1", 0)):
        super().__init__()
        self.ckptdir = ckptdir
        self.signum = signum
        self._requested = False
        self._previous_handler = None
        self._saved_step: int | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.ckptdir, "last.ckpt")

    def save(self, trainer: pl.Trainer, reason: str = "Summoning checkpoint") -> None:
        """Dump the full training state and write it on rank 0."""
        if trainer.global_rank != 0:
            return
        logger.warning("%s: writing %s", reason, self.path)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.path)

    def _on_signal(self, signum, frame) -> None:
        self._requested = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum:
            try:
                self._previous_handler = signal.signal(self.signum, self._on_signal)
            except ValueError:  # not in the main thread
                self._previous_handler = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step  # any checkpoint written now holds this step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step > 0 and self._saved_step != trainer.global_step:
            if self._model_checkpoint_writes_last(trainer):
                return  # it runs after this callback; writing here too left last.ckpt and last-v1.ckpt
            self.save(trainer, reason=f"training ended at step {trainer.global_step} after the last checkpoint")

    def _model_checkpoint_writes_last(self, trainer: pl.Trainer) -> bool:
        """Whether a ModelCheckpoint will write this folder's last.ckpt at the end of training:
        Lightning's (2.5 and later) does so in its `on_train_end` when it has not written one
        during the run. Lightning calls checkpoint callbacks after all others."""
        for callback in trainer.checkpoint_callbacks:
            if (isinstance(callback, ModelCheckpoint) and callback.save_last and not callback.last_model_path
                    and callback.CHECKPOINT_NAME_LAST == "last" and callback.dirpath is not None
                    and os.path.abspath(callback.dirpath) == os.path.abspath(self.ckptdir)
                    and type(callback).on_train_end is not pl.Callback.on_train_end):
                return True
        return False

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum and self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._requested:
            self._requested = False
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or trainer.global_step == 0 and trainer.current_epoch == 0:
            return  # nothing trained yet: keep the previous last.ckpt
        try:
            self.save(trainer)
        except Exception as err:  # never hide the original exception
            logger.error("could not write %s: %s", self.path, err)
