"""Precomputed latents: the shard format, `scripts/cache_latents.py`, and training on the cache."""
from __future__ import annotations

import copy
import importlib.util
import json

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from ldm.data.cached_latents import (
    CachedLatents,
    CachedLatentsError,
    CachedLatentsWriter,
    read_index,
)
from ldm.models.diffusion.conditioning import batch_to_tensor
from ldm.util import instantiate_from_config
from tests.models.tiny import LDM, TINY_KL, UNET_XATTN, BlobImages

pytestmark = [pytest.mark.filterwarnings("ignore:You called `self.log"),
              pytest.mark.filterwarnings("ignore:Found .* module.*in eval mode")]


def test_writer_and_reader_round_trip(tmp_path):
    writer = CachedLatentsWriter(tmp_path / "cache", "moments", shard_size=3, dtype="float32",
                                 cond_source_key="txt", provenance={"note": "test"})
    latents, cond = torch.randn(7, 8, 2, 2), torch.randn(7, 5, 4)
    labels = torch.arange(7)
    captions = [f"caption {i}" for i in range(7)]
    writer.add(latents[:4], cond[:4], {"class_label": labels[:4], "txt": captions[:4]})
    writer.add(latents[4:], cond[4:], {"class_label": labels[4:], "txt": captions[4:]})
    index_path = writer.close()
    index = json.loads(index_path.read_text())
    assert index["num_samples"] == 7 and [s["num_samples"] for s in index["shards"]] == [3, 3, 1]
    assert index["latent"] == {"key": "latent", "kind": "moments", "shape": [8, 2, 2], "dtype": "float32"}
    assert index["cond"]["shape"] == [5, 4] and index["fields"] == {"class_label": "tensor", "txt": "str"}

    data = CachedLatents(tmp_path / "cache")
    assert len(data) == 7
    for i in (0, 3, 6, -1):
        sample = data[i]
        j = i % 7
        assert torch.equal(sample["latent"], latents[j]) and torch.equal(sample["cond_embedding"], cond[j])
        assert sample["txt"] == captions[j] and sample["class_label"].item() == j
    batch = next(iter(DataLoader(data, batch_size=5)))
    assert batch["latent"].shape == (5, 8, 2, 2) and batch["txt"] == captions[:5]
    with pytest.raises(IndexError):
        data[7]
    only = CachedLatents(tmp_path / "cache", fields=["txt"], dtype="float16")
    assert set(only[0]) == {"latent", "cond_embedding", "txt"} and only[0]["latent"].dtype == torch.float16

    with pytest.raises(CachedLatentsError, match="already holds a cache"):
        CachedLatentsWriter(tmp_path / "cache", "latent")
    with pytest.raises(CachedLatentsError, match="no index.json"):
        CachedLatents(tmp_path / "nothing")
    (tmp_path / "cache" / "shard-000001.safetensors").unlink()
    with pytest.raises(CachedLatentsError, match="shard-000001.safetensors .* missing"):
        read_index(tmp_path / "cache")


def test_reader_opens_each_shard_once_and_closes_the_least_recently_used(tmp_path, monkeypatch):
    import pickle

    import ldm.data.cached_latents as cached

    writer = CachedLatentsWriter(tmp_path / "cache", "latent", shard_size=2, dtype="float32")
    latents = torch.randn(7, 3, 2, 2)
    writer.add(latents, fields={"txt": [f"c{i}" for i in range(7)]})
    writer.close()
    opened = []
    real_open = cached.safe_open
    monkeypatch.setattr(cached, "safe_open", lambda path, **kw: opened.append(path) or real_open(path, **kw))
    monkeypatch.setattr(cached, "MAX_OPEN_SHARDS", 2)
    data = CachedLatents(tmp_path / "cache")
    order = [0, 1, 0, 1, 2, 3, 2, 0, 6, 5, 4]  # shards 0 0 0 0 1 1 1 0 3 2 2
    for i in order:
        sample = data[i]
        assert torch.equal(sample["latent"], latents[i]) and sample["txt"] == f"c{i}"
    names = [p.rsplit("/", 1)[-1] for p in opened]
    # shard 0 stays open while shard 1 is read; shard 3 evicts shard 1, shard 2 evicts shard 0
    assert names == ["shard-000000.safetensors", "shard-000001.safetensors",
                     "shard-000003.safetensors", "shard-000002.safetensors"]
    assert list(data._open) == [3, 2]
    copy_ = pickle.loads(pickle.dumps(data))  # what a DataLoader worker gets: no open handles
    assert len(copy_._open) == 0 and torch.equal(copy_[5]["latent"], latents[5])
    batch = next(iter(DataLoader(data, batch_size=7, num_workers=1)))
    assert torch.equal(batch["latent"], latents) and batch["txt"] == [f"c{i}" for i in range(7)]


def model_config() -> dict:
    """A tiny class-conditional LatentDiffusion with a frozen class encoder (so it is cached)."""
    unet = copy.deepcopy(UNET_XATTN)
    return {
        "target": LDM,
        "params": {
            "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "first_stage_key": "image",
            "cond_stage_key": "class_label", "image_size": 8, "channels": 4, "conditioning_key": "crossattn",
            "cond_stage_trainable": False, "scale_factor": 0.5, "use_ema": False,
            "conditioning_dropout": {"class_label": {"p": 0.5, "val": 2}},
            "unet_config": unet, "first_stage_config": copy.deepcopy(TINY_KL),
            "cond_stage_config": {"target": "ldm.modules.encoders.modules.ClassEmbedder",
                                  "params": {"embed_dim": 16, "n_classes": 3, "key": "class_label"}},
        },
    }


def load_script():
    from tests.models.test_configs import REPO

    spec = importlib.util.spec_from_file_location("cache_latents", REPO / "scripts" / "cache_latents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOBS = {"target": "tests.models.tiny.BlobImages", "params": {"length": 10}}


def make_cache(tmp_path, model_cfg: dict, extra: tuple[str, ...] = ()) -> torch.nn.Module:
    """A model from `model_cfg` and the cache of its training data (BlobImages) in tmp_path/cache."""
    torch.manual_seed(0)
    config = {"model": model_cfg, "data": {"target": "ldm.data.datamodule.DataModuleFromConfig", "params": {
        "batch_size": 4, "train": BLOBS}}}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    model = instantiate_from_config(config["model"])
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    script = load_script()
    assert script.main(["--base", str(config_path), "--ckpt", str(ckpt), "--out", str(tmp_path / "cache"),
                        "--batch-size", "4", "--shard-size", "6", "--dtype", "float32", "--device", "cpu",
                        *extra]) == 0
    return model


def test_cache_script_and_training_on_the_cache(tmp_path):
    model = make_cache(tmp_path, model_config())
    index = read_index(tmp_path / "cache")
    assert index["num_samples"] == 10 and len(index["shards"]) == 2
    assert index["latent"]["kind"] == "moments" and index["latent"]["shape"] == [8, 8, 8]
    assert index["cond"]["source_key"] == "class_label" and index["cond"]["shape"] == [1, 16]
    assert set(index["fields"]) == {"caption", "class_label", "mask"}  # the image itself is not stored

    cached = next(iter(DataLoader(CachedLatents(tmp_path / "cache"), batch_size=4)))
    images = next(iter(DataLoader(BlobImages(length=10), batch_size=4)))
    model.eval()
    torch.manual_seed(5)
    z_cached, c_cached = model.get_input(cached, "image")
    torch.manual_seed(5)
    z_images, c_images = model.get_input(images, "image")
    torch.testing.assert_close(z_cached, z_images, atol=1e-5, rtol=1e-5)  # same posterior, same noise draw
    torch.testing.assert_close(c_cached, c_images)

    # conditioning dropout on cached embeddings uses the encoder's embedding of the null class
    null = model.cond_stage_model({"class_label": torch.tensor([2])})
    torch.manual_seed(0)
    dropped = model.drop_conditions(cached)["cond_embedding"]
    nulled = (dropped == null).all(dim=(1, 2))
    assert nulled.any() and torch.equal(dropped[~nulled], cached["cond_embedding"][~nulled])

    # a few training steps read only the cache: the first stage's encoder is never called
    calls = []
    model.first_stage_model.encoder.register_forward_hook(lambda *a: calls.append(1))
    model.learning_rate = 1e-3
    model.train()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(CachedLatents(tmp_path / "cache"), batch_size=4, shuffle=True))
    assert trainer.global_step == 4 and not calls


def test_cache_script_encodes_under_bf16_autocast_when_asked(tmp_path):
    model = make_cache(tmp_path, model_config(), extra=("--precision", "bf16-mixed"))
    index = read_index(tmp_path / "cache")
    assert index["provenance"]["precision"] == "bf16-mixed"
    cached = CachedLatents(tmp_path / "cache")
    model.eval()
    full, half = [], []
    with torch.no_grad():
        for batch in DataLoader(BlobImages(length=10), batch_size=4):  # the script's batches
            x = batch_to_tensor(batch, "image")
            full.append(model.first_stage_model.encode(x).parameters)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half.append(model.first_stage_model.encode(x).parameters.float())
    full, half = torch.cat(full), torch.cat(half)
    moments = torch.stack([cached[i]["latent"] for i in range(10)])
    assert moments.dtype == torch.float32
    torch.testing.assert_close(moments, half)  # what training in bf16 without a cache would encode
    assert not torch.allclose(moments, full, atol=1e-4) and torch.allclose(moments, full, atol=0.1)
    with pytest.raises(SystemExit):
        load_script().parse_args(["--base", "x.yaml", "--out", "y", "--precision", "bf17"])


def test_datamodule_reads_a_latent_cache_and_scale_by_std_uses_it(tmp_path):
    """`data.params.latent_caches.train=<cache>` swaps the train split for the cache; scale_by_std
    estimates the same scale factor from cached moments as from the images."""
    from ldm.data.datamodule import DataModuleFromConfig

    cfg = model_config()
    cfg["params"].update(scale_by_std=True, scale_factor=1.0)
    model = make_cache(tmp_path, cfg)
    data = DataModuleFromConfig(batch_size=4, train=BLOBS, num_workers=0,
                                latent_caches={"train": str(tmp_path / "cache")})
    data.setup("fit")
    assert isinstance(data.datasets["train"], CachedLatents) and len(data.datasets["train"]) == 10
    with pytest.raises(ValueError, match="latent_caches names splits without a data set config: \\['validation'\\]"):
        DataModuleFromConfig(batch_size=4, train=BLOBS, latent_caches={"validation": str(tmp_path / "cache")})

    cached = next(iter(DataLoader(CachedLatents(tmp_path / "cache"), batch_size=4)))
    images = next(iter(DataLoader(BlobImages(length=10), batch_size=4)))
    scales = []
    for batch in (cached, images):
        model.scale_factor.fill_(1.0)
        torch.manual_seed(3)
        model.on_train_batch_start(batch, 0)
        scales.append(float(model.scale_factor))
    assert scales[0] != 1.0 and scales[0] == pytest.approx(scales[1], rel=1e-5)

    calls = []
    model.first_stage_model.encoder.register_forward_hook(lambda *a: calls.append(1))
    model.scale_factor.fill_(1.0)
    model.learning_rate = 1e-3
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert trainer.global_step == 2 and not calls and float(model.scale_factor) != 1.0
