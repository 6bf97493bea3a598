"""txt2img and img2img end to end on a tiny text-conditional LDM (KL first stage, BERT encoder)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.scripts.conftest import REPO, load_script, pngs

STEPS = ["--ddim_steps", "3"]


@pytest.fixture(scope="module")
def txt2img():
    return load_script("txt2img")


@pytest.fixture(scope="module")
def img2img():
    return load_script("img2img")


def model_args(tiny_models, name="txt2img"):
    config, ckpt = tiny_models[name]
    return ["--config", config, "--ckpt", ckpt]


def test_txt2img_same_seed_same_pngs_and_numbering(tiny_models, txt2img, tmp_path):
    args = model_args(tiny_models) + STEPS + ["--n_samples", "2", "--n_iter", "1", "--prompt", "a red circle",
                                              "--scale", "3"]
    txt2img.main(args + ["--outdir", str(tmp_path / "a")])
    txt2img.main(args + ["--outdir", str(tmp_path / "b")])
    first = pngs(tmp_path / "a")
    assert sorted(first) == ["grid-0000.png", "samples/00000.png", "samples/00001.png"]
    assert first == pngs(tmp_path / "b")
    txt2img.main(args + ["--outdir", str(tmp_path / "c"), "--seed", "7"])
    assert pngs(tmp_path / "c")["samples/00000.png"] != first["samples/00000.png"]
    # a second run into the same folder continues the numbering and leaves the first files alone
    txt2img.main(args + ["--outdir", str(tmp_path / "a"), "--seed", "7"])
    again = pngs(tmp_path / "a")
    assert sorted(again) == ["grid-0000.png", "grid-0001.png", "samples/00000.png", "samples/00001.png",
                             "samples/00002.png", "samples/00003.png"]
    assert all(again[k] == v for k, v in first.items())


@pytest.mark.parametrize("flag", ["--plms", "--dpm_solver", "--fixed_code"])
def test_txt2img_samplers_and_fixed_code(tiny_models, txt2img, tmp_path, flag):
    written = txt2img.main(model_args(tiny_models) + STEPS + [flag, "--n_samples", "1", "--n_iter", "2",
                                                              "--outdir", str(tmp_path), "--skip_grid"])
    assert [p.name for p in written] == ["00000.png", "00001.png"]
    if flag == "--fixed_code":  # same start noise and prompt in both iterations: the same image
        assert written[0].read_bytes() == written[1].read_bytes()


def test_txt2img_twice_the_training_size(tiny_models, txt2img, tmp_path):
    written = txt2img.main(model_args(tiny_models) + STEPS + ["--H", "32", "--W", "32", "--n_samples", "1",
                                                              "--n_iter", "1", "--outdir", str(tmp_path)])
    assert Image.open(written[0]).size == (32, 32)  # trained on 16x16 (8x8 latents)


def test_txt2img_prompts_from_file(tiny_models, txt2img, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\na cat\n")
    written = txt2img.main(model_args(tiny_models) + STEPS + ["--from-file", str(prompts), "--n_samples", "2",
                                                              "--n_iter", "1", "--outdir", str(tmp_path / "o")])
    assert len([p for p in written if p.parent.name == "samples"]) == 3  # batches [2, 1]


@pytest.mark.parametrize("extra, message", [
    (["--H", "17"], "divisible by the downsampling factor f=2"),
    (["--H", "18"], "must be divisible by 4"),
    (["--f", "8"], "does not match the first stage"),
    (["--C", "3"], "latent channels"),
    (["--ddim_steps", "0"], "at least 1"),
    (["--plms", "--ddim_eta", "0.5"], "eta must be 0"),
    (["--plms", "--dpm_solver"], "exclude each other"),
])
def test_txt2img_bad_input(tiny_models, run_cli, tmp_path, extra, message):
    code, err = run_cli("txt2img", model_args(tiny_models) + ["--outdir", str(tmp_path)] + extra)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_txt2img_empty_prompt_file_and_missing_checkpoint(tiny_models, run_cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, err = run_cli("txt2img", model_args(tiny_models) + ["--from-file", str(empty)])
    assert code == 2 and "is empty" in err
    config, _ = tiny_models["txt2img"]
    code, err = run_cli("txt2img", ["--config", config, "--ckpt", str(tmp_path / "models/ldm/text2img256/model.ckpt")])
    assert code == 2 and "bash scripts/download_models.sh text2img256" in err and err.count("\n") == 1


def test_cli_help_and_exit_code(tmp_path):
    ok = subprocess.run([sys.executable, str(REPO / "scripts/txt2img.py"), "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--dpm_solver" in ok.stdout and "--precision" in ok.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts/img2img.py"), "--init-img", "x.png", "--strength", "2",
                          "--ckpt", str(tmp_path / "none.ckpt")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "img2img.py: error: --strength must be in [0, 1], got 2.0"


def _init_image(path, size=16):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_img2img_strength_zero_returns_the_decoded_input(tiny_models, img2img, tmp_path):
    from ldm.sampling_utils import load_config, load_image, load_model, seed_everything, to_unit_range

    init = _init_image(tmp_path / "init.png")
    written = img2img.main(model_args(tiny_models) + STEPS + ["--init-img", str(init), "--strength", "0",
                                                              "--n_samples", "1", "--outdir", str(tmp_path / "o")])
    config, ckpt = tiny_models["txt2img"]
    model = load_model(load_config(config), ckpt)
    seed_everything(42)  # the script's default seed, drawn before the posterior sample
    with torch.no_grad():
        z = model.get_first_stage_encoding(model.encode_first_stage(load_image(str(init))))
        expected = to_unit_range(model.decode_first_stage(z))[0]
    got = torch.from_numpy(np.array(Image.open(written[0]))).permute(2, 0, 1).float() / 255
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("strength", ["0.5", "1.0"])
def test_img2img_runs_and_is_reproducible(tiny_models, img2img, tmp_path, strength):
    init = _init_image(tmp_path / "init.png")
    args = model_args(tiny_models) + STEPS + ["--init-img", str(init), "--strength", strength, "--n_samples", "2",
                                              "--scale", "2"]
    img2img.main(args + ["--outdir", str(tmp_path / "a")])
    img2img.main(args + ["--outdir", str(tmp_path / "b")])
    assert pngs(tmp_path / "a") == pngs(tmp_path / "b") and len(pngs(tmp_path / "a")) == 3


@pytest.mark.parametrize("extra, message", [
    (["--strength", "-0.1"], "[0, 1]"),
    (["--plms"], "not supported"),
])
def test_img2img_bad_input(tiny_models, run_cli, tmp_path, extra, message):
    init = _init_image(tmp_path / "init.png")
    code, err = run_cli("img2img", model_args(tiny_models) + ["--init-img", str(init)] + extra)
    assert code == 2 and message in err, err
    code, err = run_cli("img2img", model_args(tiny_models) + ["--init-img", str(tmp_path / "missing.png")])
    assert code == 2 and "not found" in err
