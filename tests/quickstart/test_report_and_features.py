"""The quickstart's report writer and its feature network."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldm.quickstart import report
from ldm.quickstart.features import ScenesFeatureExtractor, image_features, train_feature_network, trained_on

REPO = Path(__file__).resolve().parents[2]


def sample_results() -> dict:
    accuracies = {"n": 4.0, "caption_accuracy": 0.75, "attribute_accuracy": 0.9, "count_accuracy": 1.0,
                  "color_accuracy": 0.9, "shape_accuracy": 0.8, "relation_accuracy": 0.5}
    return {
        "mode": "tiny", "setup": {"device": "CPU", "cpu_count": 2, "torch": torch.__version__},
        "timings": {"train the autoencoder": 12.5, "total": 60.0},
        "autoencoder": {"f": 4, "image_shape": [3, 32, 32], "latent_shape": "3x8x8", "steps": 10,
                        "psnr": 25.5, "ssim": 0.8, "n_eval": 4},
        "diffusion": {"steps": 10, "unet_params_m": 1.0, "text_params_m": 0.5, "scale_factor": 1.2,
                      "sampler": "DDIM"},
        "judge_on_real": dict(accuracies, caption_accuracy=1.0),
        "judge": {"no guidance (scale 1)": accuracies, "guidance scale 3": dict(accuracies, caption_accuracy=0.875)},
        "fid": {"n_reference": 4, "feature_dim": 128,
                "samples": {"guidance scale 3": {"fid": 12.25, "precision": 0.5, "recall": 0.25},
                            "other real scenes": {"fid": 3.5, "precision": 1.0, "recall": 1.0}}},
        "inpainting": {"method": "mask-guided DDIM", "n": 4, "caption_accuracy": 0.5,
                       "attribute_accuracy": 0.7, "psnr_in_hole": 15.0},
    }


def test_write_report_writes_markdown_json_and_grids(tmp_path):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    rows = [report.GridRow("a red circle above a blue square and a green star to the left of the blue square",
                           [image, image, image], [None, True, False])]
    grid = report.make_grid(rows, ["real", "no guidance", "guidance"])
    paths = report.write_report(tmp_path, sample_results(), grid, grid)
    data = json.loads(paths["json"].read_text())
    assert data["judge"]["guidance scale 3"]["caption_accuracy"] == 0.875
    assert data["files"]["grid"].endswith("samples_grid.png")
    text = paths["markdown"].read_text()
    for expected in ("87.5%", "25.50 dB", "3x8x8", "12.25", "| other real scenes | 3.50 |", "the floor",
                     "![prompts and samples](samples_grid.png)", "![inpainting](inpainting_grid.png)"):
        assert expected in text
    assert paths["grid"].is_file() and paths["inpaint_grid"].is_file()
    assert "Note:" not in text  # no advice given, none shown


def test_the_report_shows_the_runs_advice(tmp_path):
    advice = "caption accuracy 59.8% is below the 80% target: ... `bash scripts/quickstart.sh --minutes 33` ..."
    paths = report.write_report(tmp_path, {**sample_results(), "advice": advice})
    assert json.loads(paths["json"].read_text())["advice"] == advice
    assert f"**Note:** {advice}" in paths["markdown"].read_text()


def test_feature_network_trains_saves_and_extracts(tmp_path):
    ckpt = tmp_path / "features.pt"
    metrics = train_feature_network(ckpt, steps=3, batch_size=8, size=32)
    assert set(metrics) == {"classes_exact", "count", "background"}
    extractor = ScenesFeatureExtractor(ckpt)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    features = image_features(extractor, images, batch_size=2)
    assert features.shape == (5, extractor.feature_dim) and np.isfinite(features).all()
    out = extractor(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    assert out["logits"].shape == (5, 36)
    with pytest.raises(ValueError):  # the ldm.eval contract: uint8 [B, 3, H, W] only
        extractor(torch.zeros(1, 3, 32, 32))


def test_feature_extractor_plugs_into_ldm_eval(tmp_path):
    from ldm.eval import build_feature_extractor

    ckpt = tmp_path / "features.pt"
    train_feature_network(ckpt, steps=1, batch_size=4, size=32)
    extractor = build_feature_extractor("ldm.quickstart.features.ScenesFeatureExtractor", checkpoint=ckpt)
    assert extractor.name == "scenes-cnn"


def test_trained_on_compares_the_scene_options(tmp_path):
    ckpt = tmp_path / "features.pt"
    train_feature_network(ckpt, steps=1, batch_size=4, size=32, max_objects=2, object_size=(0.3, 0.45))
    assert trained_on(ckpt, size=32, max_objects=2, object_size=[0.3, 0.45])  # tuple or list alike
    assert not trained_on(ckpt, size=32, max_objects=2, object_size=[0.3, 0.5])
    assert not trained_on(ckpt, size=32, max_objects=3, object_size=[0.3, 0.45])
    assert not trained_on(tmp_path / "missing.pt", size=32, max_objects=2)


def test_features_cli_trains_on_the_scenes_of_a_config(tmp_path):
    from ldm.quickstart.evaluation import scene_options
    from ldm.quickstart.features import main

    torch.set_num_threads(1)
    config = REPO / "configs" / "quickstart" / "txt2img.yaml"
    out = tmp_path / "features.pt"
    assert main(["--config", str(config), "--steps", "1", "--batch-size", "4", "--out", str(out)]) == 0
    assert trained_on(out, **scene_options(config))
    assert not trained_on(out, **dict(scene_options(config), max_objects=3))


def test_the_shipped_network_fits_the_quickstart_scenes_and_recognises_them():
    """models/quickstart/scenes_features.pt: trained on the quickstart config's scenes, and its
    recorded validation accuracies are what it scores (the FID features separate the classes)."""
    from ldm.data.scenes import Scenes
    from ldm.quickstart.evaluation import scene_options
    from ldm.quickstart.features import ScenesNet, evaluate_feature_network

    torch.set_num_threads(1)
    shipped = REPO / "models" / "quickstart" / "scenes_features.pt"
    options = scene_options(REPO / "configs" / "quickstart" / "txt2img.yaml")
    assert trained_on(shipped, **options)
    state = torch.load(shipped, map_location="cpu", weights_only=True)
    net = ScenesNet(input_size=state["input_size"])
    net.load_state_dict(state["state_dict"])
    metrics = evaluate_feature_network(net, Scenes(split="validation", **options))
    assert metrics == pytest.approx(state["metrics"], abs=0.01)
    assert metrics["classes_exact"] >= 0.97 and metrics["count"] >= 0.99
