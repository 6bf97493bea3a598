"""`DataModuleFromConfig`: a LightningDataModule whose data sets are config nodes.

Released configs name it `main.DataModuleFromConfig`; the alias table in `ldm.util` maps that
name here. Each of `train`, `validation`, `test`, `predict` is a `{target, params}` node that
builds a map-style or iterable data set. `latent_caches` maps a split to a folder written by
`scripts/cache_latents.py` from that split: training a `LatentDiffusion` then reads the
precomputed first-stage latents instead of encoding every batch (the config stays the same;
one override switches it on, e.g. `data.params.latent_caches.train=cache/train`).
"""
from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ldm.data.cached_latents import CachedLatents
from ldm.util import instantiate_from_config

logger = logging.getLogger(__name__)


class WrappedDataset(Dataset):
    """Wraps any object with `__len__` and `__getitem__` into a torch Dataset."""

    def __init__(self, dataset: Any):
        self.data = dataset

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> Any:
        return self.data[idx]


def worker_init_fn(worker_id: int) -> None:
    """Give each worker its own numpy seed; split an iterable data set's shards across workers.

    Iterable data sets may expose `set_worker(worker_id, num_workers)` (or the original's
    `sample_ids`/`valid_ids` split) to read a disjoint part of the data in each worker.
    """
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)
    if hasattr(dataset, "set_worker"):
        dataset.set_worker(worker_id, info.num_workers)
    elif hasattr(dataset, "sample_ids") and hasattr(dataset, "valid_ids"):
        split_size = dataset.num_records // info.num_workers
        dataset.sample_ids = dataset.valid_ids[worker_id * split_size:(worker_id + 1) * split_size]


class DataModuleFromConfig(pl.LightningDataModule):
    """Data sets from config nodes, served with one batch size and worker count.

    Args:
        batch_size: samples per batch (per device).
        train, validation, test, predict: `{target, params}` nodes of the data sets.
        wrap: wrap each data set into `WrappedDataset` (for objects that are not Datasets).
        num_workers: data-loading processes; default `2 * batch_size` as in the original.
        shuffle_test_loader: shuffle the test loader.
        use_worker_init_fn: seed workers and split iterable data sets across them.
        shuffle_val_dataloader: shuffle the validation loader.
        latent_caches: {split: folder of `scripts/cache_latents.py`}: these splits read
            `ldm.data.cached_latents.CachedLatents` from the folder instead of their node.
    """

    def __init__(self, batch_size: int, train: Any = None, validation: Any = None, test: Any = None,
                 predict: Any = None, wrap: bool = False, num_workers: int | None = None,
                 shuffle_test_loader: bool = False, use_worker_init_fn: bool = False,
                 shuffle_val_dataloader: bool = False, latent_caches: dict[str, str] | None = None):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers if num_workers is not None else batch_size * 2
        self.use_worker_init_fn = use_worker_init_fn
        self.wrap = wrap
        self.shuffle = {"train": True, "validation": shuffle_val_dataloader,
                        "test": shuffle_test_loader, "predict": False}
        self.dataset_configs = {k: v for k, v in
                                (("train", train), ("validation", validation), ("test", test), ("predict", predict))
                                if v is not None}
        self.latent_caches = dict(latent_caches or {})
        unknown = sorted(set(self.latent_caches) - set(self.dataset_configs))
        if unknown:
            raise ValueError(f"data.params.latent_caches names splits without a data set config: {unknown} "
                             f"(configured: {sorted(self.dataset_configs)})")
        self.datasets: dict[str, Any] = {}
        # Lightning only calls the loaders that exist: define them per configured split.
        for split, hook in (("train", "train_dataloader"), ("validation", "val_dataloader"),
                            ("test", "test_dataloader"), ("predict", "predict_dataloader")):
            if split in self.dataset_configs:
                setattr(self, hook, lambda split=split: self._loader(split))

    def prepare_data(self) -> None:
        """Build each data set once in the main process (downloads or indexing happen here)."""
        for split in self.dataset_configs:
            self.datasets[split] = self._build(split)

    def setup(self, stage: str | None = None) -> None:
        for split in self.dataset_configs:
            if split not in self.datasets:
                self.datasets[split] = self._build(split)
            if self.wrap and not isinstance(self.datasets[split], WrappedDataset):
                self.datasets[split] = WrappedDataset(self.datasets[split])

    def _build(self, split: str) -> Any:
        if split not in self.latent_caches:
            return instantiate_from_config(self.dataset_configs[split], path=f"data.params.{split}")
        dataset = CachedLatents(self.latent_caches[split])
        logger.info("data %s: %d cached latents from %s (instead of %s)", split, len(dataset),
                    self.latent_caches[split], self.dataset_configs[split].get("target"))
        return dataset

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            self.setup()
        dataset = self.datasets[split]
        iterable = isinstance(dataset, IterableDataset)
        init_fn = worker_init_fn if (iterable or self.use_worker_init_fn) else None
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          shuffle=self.shuffle[split] and not iterable, worker_init_fn=init_fn,
                          persistent_workers=self.num_workers > 0 and split == "train")
