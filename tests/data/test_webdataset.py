"""Webdataset-style tar shards: decoding, filters, corrupt samples, and the split across ranks/workers."""
from __future__ import annotations

import logging
import tarfile

import numpy as np
import pytest
from torch.utils.data import DataLoader

from ldm.data.base import MissingDataError
from ldm.data.webdataset import WebDataset, distributed_context, expand_braces, iter_tar_samples
from tests.data.layouts import write_shards


def _keys(ds: WebDataset) -> list[str]:
    return [ex["__key__"] for ex in ds]


def test_reads_every_sample_with_keys_shapes_and_captions(tmp_path):
    shards = write_shards(tmp_path, 2, 3)
    ds = WebDataset(shards, size=16, shuffle_shards=False, rank=0, world_size=1)
    out = list(ds)
    assert len(out) == 6
    ex = out[0]
    assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.float32
    assert -1 <= ex["image"].min() and ex["image"].max() <= 1
    assert ex["caption"] == f"caption {ex['__key__']}"
    sd = WebDataset(shards, size=16, image_key="jpg", caption_out_key="txt", caption_key="caption",
                    rank=0, world_size=1)
    first = next(iter(sd))
    assert first["txt"].startswith("json caption") and first["jpg"].shape == (16, 16, 3)


def test_brace_patterns_and_missing_shards(tmp_path):
    write_shards(tmp_path, 3, 1)
    assert expand_braces("a{00..02}.tar") == ["a00.tar", "a01.tar", "a02.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    ds = WebDataset(str(tmp_path / "{00000..00002}.tar"), size=8, rank=0, world_size=1)
    assert len(ds.shards) == 3 and len(WebDataset(str(tmp_path), size=8).shards) == 3
    with pytest.raises(MissingDataError, match=r"00003\.tar.*7 of 10 shards missing"):
        WebDataset(str(tmp_path / "{00000..00009}.tar"))
    with pytest.raises(MissingDataError, match="expected layout"):
        WebDataset(str(tmp_path / "nothing-*.tar"))


@pytest.mark.parametrize("n_shards,per_shard", [(4, 3), (1, 7)])  # split by shard, and by sample
def test_two_ranks_see_disjoint_samples_covering_everything(tmp_path, n_shards, per_shard):
    shards = write_shards(tmp_path, n_shards, per_shard)
    seen = [_keys(WebDataset(shards, size=8, rank=r, world_size=2, seed=3)) for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(_keys(WebDataset(shards, size=8, rank=0, world_size=1)))
    assert len(seen[0] + seen[1]) == n_shards * per_shard


def test_ranks_and_dataloader_workers_split_without_duplicates(tmp_path):
    shards = write_shards(tmp_path, 5, 2)
    keys = []
    for rank in (0, 1):
        ds = WebDataset(shards, size=8, rank=rank, world_size=2, shuffle_buffer=3)
        loader = DataLoader(ds, batch_size=2, num_workers=2)
        keys += [k for batch in loader for k in batch["__key__"]]
    assert len(keys) == 10 and len(set(keys)) == 10


def test_rank_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_context() == (3, 4)
    assert distributed_context(1, 2) == (1, 2)


def test_shard_order_changes_with_the_epoch_but_not_the_content(tmp_path):
    shards = write_shards(tmp_path, 6, 1)
    ds = WebDataset(shards, size=8, rank=0, world_size=1, seed=1)
    first, second = _keys(ds), _keys(ds)
    assert sorted(first) == sorted(second) and first != second


def test_min_size_watermark_and_corrupt_samples(tmp_path, caplog):
    shards = write_shards(tmp_path, 1, 4, size=(40, 36), corrupt_key="000000001")
    with caplog.at_level(logging.WARNING):
        ds = WebDataset(shards, size=8, rank=0, world_size=1)
        keys = _keys(ds)
    assert keys == ["000000000", "000000002", "000000003"] and ds.corrupt.count == 1
    assert "000000001" in caplog.text and "1 so far" in caplog.text
    assert _keys(WebDataset(shards, size=8, min_size=37, rank=0, world_size=1)) == []
    assert len(_keys(WebDataset(shards, size=8, min_size=36, rank=0, world_size=1))) == 3
    assert _keys(WebDataset(shards, size=8, max_pwatermark=0.05, rank=0, world_size=1)) == []
    no_json = write_shards(tmp_path / "plain", 1, 2, size=(40, 36), json_meta=False)
    assert _keys(WebDataset(no_json, size=8, min_size=37, rank=0, world_size=1)) == []


def test_truncated_shard_is_skipped_with_a_warning(tmp_path, caplog):
    shards = write_shards(tmp_path, 2, 3)
    data = open(shards[0], "rb").read()
    open(shards[0], "wb").write(data[: len(data) // 2])
    ds = WebDataset(shards, size=8, rank=0, world_size=1, shuffle_shards=False)
    with caplog.at_level(logging.WARNING):
        keys = _keys(ds)
    assert set(k for k in keys if k.startswith("00001")) == {f"00001{j:04d}" for j in range(3)}
    assert ds.corrupt.count >= 1 and "rest of the shard skipped" in caplog.text


def test_tar_grouping_by_key(tmp_path):
    shard = write_shards(tmp_path, 1, 2)[0]
    samples = list(iter_tar_samples(shard))
    assert [sorted(k for k in s if not k.startswith("__")) for s in samples] == [["jpg", "json", "txt"]] * 2
    assert tarfile.is_tarfile(shard)


def test_shuffle_buffer_permutes_samples(tmp_path):
    shards = write_shards(tmp_path, 1, 12)
    plain = _keys(WebDataset(shards, size=8, rank=0, world_size=1, shuffle_shards=False))
    shuffled = _keys(WebDataset(shards, size=8, rank=0, world_size=1, shuffle_shards=False, shuffle_buffer=6))
    assert sorted(shuffled) == plain and shuffled != plain
