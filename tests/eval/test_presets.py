"""Presets: valid metrics, documented commands, and the CLI applying one."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.eval.presets import PRESETS, get_preset
from ldm.eval.runner import parse_metrics

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "evaluation.md"


def _cli():
    spec = importlib.util.spec_from_file_location("ldm_scripts_evaluate_presets", REPO / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_presets_follow_the_paper_protocols():
    assert {p.table for p in PRESETS.values()} >= {"Table 1", "Table 2", "Table 3", "Table 5", "Table 7"}
    for preset in PRESETS.values():
        assert parse_metrics(preset.metrics) == list(preset.metrics)
        if preset.reference_config is not None:
            assert preset.reference_config["target"].startswith("ldm.data.")
    for name in ("celebahq256", "ffhq256", "lsun_churches256", "lsun_bedrooms256", "imagenet256_cin"):
        assert get_preset(name).num_samples == 50_000
    assert get_preset("coco256_txt2img").num_samples == 30_000
    assert {"psnr", "ssim"} <= set(get_preset("imagenet_sr4x").metrics)
    assert "lpips" in get_preset("places_inpainting512").metrics
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("cifar10")


def test_every_preset_is_documented_with_its_commands():
    text = DOCS.read_text()
    for preset in PRESETS.values():
        assert f"--preset {preset.name}" in text, preset.name
        if preset.sample_command:
            assert preset.sample_command in text, preset.name


def test_a_preset_sets_metrics_and_sample_count(tmp_path, capsys):
    for side in ("samples", "reference"):
        (tmp_path / side).mkdir()
        rng = np.random.default_rng(len(side))
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)).save(tmp_path / side / f"{i}.png")
    code = _cli().main([str(tmp_path / "samples"), str(tmp_path / "reference"), "--preset",
                        "celebahq256", "--feature-extractor", "pixels", "--no-cache",
                        "--output", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["preset"] == "celebahq256" and report["paper"]["fid"] == 5.11
    assert {"fid", "precision", "recall"} <= set(report["metrics"])
    assert report["options"]["num_samples"] == 50_000 and report["metrics"]["num_samples"] == 8


def test_a_preset_without_a_reference_uses_its_data_set_config(tmp_path, capsys, monkeypatch):
    from ldm.eval import presets

    preset = presets.EvalPreset(name="celebahq256", table="Table 1", description="test",
                                metrics=("fid",), num_samples=4, reference="tiny",
                                reference_config={"target": "tests.eval.test_images.TinyDataset",
                                                  "params": {"n": 6}})
    monkeypatch.setitem(presets.PRESETS, "celebahq256", preset)
    (tmp_path / "s").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(tmp_path / "s" / f"{i}.png")
    code = _cli().main([str(tmp_path / "s"), "--preset", "celebahq256", "--feature-extractor",
                        "pixels", "--no-cache", "--output", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["num_reference"] == 6
