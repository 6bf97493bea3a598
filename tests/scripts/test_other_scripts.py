"""inpaint, sample_diffusion, superres, layout2img, semantic_synthesis and the benchmark, end to
end on tiny models (see conftest)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.scripts.conftest import load_script, pngs


def model_args(tiny_models, name):
    config, ckpt = tiny_models[name]
    return ["--config", config, "--ckpt", ckpt]


def _rgb(path, h=16, w=16, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path, h=16, w=16):
    m = np.zeros((h, w), np.uint8)
    m[4:12, 6:14] = 255
    Image.fromarray(m).save(path)
    return m > 127


# ---- inpaint --------------------------------------------------------------------------------------

def test_inpaint_keeps_unmasked_pixels_and_never_overwrites(tiny_models, tmp_path):
    indir = tmp_path / "in"
    indir.mkdir()
    _rgb(indir / "a.png")
    hole = _mask(indir / "a_mask.png")
    args = model_args(tiny_models, "inpaint") + ["--indir", str(indir), "--outdir", str(tmp_path / "out"),
                                                 "--steps", "3"]
    inpaint = load_script("inpaint")
    written = inpaint.main(args)
    assert [p.name for p in written] == ["a.png", "grid-0000.png"]
    src = np.asarray(Image.open(indir / "a.png"))
    out = np.asarray(Image.open(written[0]))
    # the unmasked region is the input itself (within the AE reconstruction error, here exactly)
    assert np.array_equal(out[~hole], src[~hole])
    assert not np.array_equal(out[hole], src[hole])
    again = inpaint.main(args)
    assert [p.name for p in again] == ["a-0001.png", "grid-0001.png"]
    assert again[0].read_bytes() == written[0].read_bytes()  # same seed, same result


def test_inpaint_bad_input(tiny_models, run_cli, tmp_path):
    indir = tmp_path / "in"
    indir.mkdir()
    _rgb(indir / "a.png")
    _mask(indir / "a_mask.png", h=8)
    base = model_args(tiny_models, "inpaint") + ["--outdir", str(tmp_path / "o"), "--steps", "2"]
    code, err = run_cli("inpaint", base + ["--indir", str(indir)])
    assert code == 2 and "a_mask.png is 16x8 but its image is 16x16" in err, err
    _mask(indir / "b_mask.png")
    (indir / "a_mask.png").unlink()
    code, err = run_cli("inpaint", base + ["--indir", str(indir)])
    assert code == 2 and "has no image" in err
    code, err = run_cli("inpaint", base + ["--indir", str(tmp_path / "nothing")])
    assert code == 2 and "not a folder" in err
    code, err = run_cli("inpaint", model_args(tiny_models, "txt2img") + ["--indir", str(indir), "--outdir",
                                                                         str(tmp_path / "o")])
    assert code == 2


# ---- sample_diffusion -----------------------------------------------------------------------------

def test_sample_diffusion_unconditional_pngs_and_npz(tiny_models, tmp_path):
    sample = load_script("sample_diffusion")
    _, ckpt = tiny_models["uncond"]
    written = sample.main(["-r", ckpt, "-n", "3", "--batch_size", "2", "-c", "3", "-e", "0", "-l", str(tmp_path)])
    names = [p.name for p in written]
    assert names == ["sample_000000.png", "sample_000001.png", "sample_000002.png", "3x16x16x3-samples.npz",
                     "grid-0000.png"]
    arr = np.load(written[3])["arr_0"]
    assert arr.shape == (3, 16, 16, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[0], np.asarray(Image.open(written[0])))
    # -r as the model folder, ancestral sampling over all (50) timesteps
    folder = ckpt.rsplit("/", 1)[0]
    vanilla = sample.main(["-r", folder, "-n", "1", "--batch_size", "1", "-v", "-l", str(tmp_path / "v")])
    assert vanilla[0].name == "sample_000000.png"


def test_sample_diffusion_class_conditional(tiny_models, run_cli, tmp_path):
    sample = load_script("sample_diffusion")
    _, ckpt = tiny_models["classcond"]
    args = ["-r", ckpt, "-n", "2", "--batch_size", "2", "-c", "3", "--classes", "1", "4"]
    a = sample.main(args + ["-l", str(tmp_path / "a")])
    b = sample.main(args + ["-l", str(tmp_path / "b")])
    assert [p.read_bytes() for p in a[:2]] == [p.read_bytes() for p in b[:2]]
    code, err = run_cli("sample_diffusion", ["-r", ckpt, "-n", "1", "--classes", "9"])
    assert code == 2 and "outside [0, 5)" in err
    code, err = run_cli("sample_diffusion", ["-r", ckpt, "-n", "1", "-c", "2", "--scale", "3", "-l", str(tmp_path)])
    assert code == 2 and "null class" in err
    code, err = run_cli("sample_diffusion", ["-r", str(tmp_path / "missing.ckpt")])
    assert code == 2 and "download_models.sh" in err


# ---- superres -------------------------------------------------------------------------------------

@pytest.mark.parametrize("patches", [False, True])
def test_superres_any_size(tiny_models, tmp_path, patches):
    lr = _rgb(tmp_path / "lr.png", h=12, w=10)
    extra = ["--patch_size", "8", "--patch_stride", "4"] if patches else []
    written = load_script("superres").main(model_args(tiny_models, "superres") + [
        "--input", str(lr), "--outdir", str(tmp_path / "o"), "--ddim_steps", "2"] + extra)
    assert Image.open(written[0]).size == (20, 24)  # x2: the tiny first stage's factor


def test_superres_rejects_other_models(tiny_models, run_cli, tmp_path):
    lr = _rgb(tmp_path / "lr.png")
    code, err = run_cli("superres", model_args(tiny_models, "inpaint") + ["--input", str(lr)])
    assert code == 2 and "not a super-resolution model" in err


# ---- layout2img -----------------------------------------------------------------------------------

def test_layout2img(tiny_models, run_cli, tmp_path):
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps({"num_classes": 10, "class_names": ["sky", "dog"],
                                  "objects": [{"class": "dog", "bbox": [0.1, 0.2, 0.5, 0.5]},
                                              {"class": 3, "bbox": [0.5, 0.5, 0.4, 0.4]}]}))
    args = model_args(tiny_models, "layout") + ["--layout", str(layout), "--ddim_steps", "2", "--n_samples", "2"]
    script = load_script("layout2img")
    script.main(args + ["--outdir", str(tmp_path / "a")])
    script.main(args + ["--outdir", str(tmp_path / "b")])
    assert pngs(tmp_path / "a") == pngs(tmp_path / "b") and len(pngs(tmp_path / "a")) == 3
    too_many = tmp_path / "many.json"
    too_many.write_text(json.dumps({"num_classes": 10, "objects": [{"class": 1, "bbox": [0, 0, 0.1, 0.1]}] * 5}))
    code, err = run_cli("layout2img", model_args(tiny_models, "layout") + ["--layout", str(too_many)])
    assert code == 2 and "at most 4" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"objects": [{"class": "cat", "bbox": [0, 0, 1, 1]}]}))
    code, err = run_cli("layout2img", model_args(tiny_models, "layout") + ["--layout", str(bad)])
    assert code == 2 and "unknown class name 'cat'" in err


# ---- semantic_synthesis ---------------------------------------------------------------------------

def _labels(path, h, w):
    lab = np.zeros((h, w), np.uint8)
    lab[: h // 2] = 1
    lab[h // 2:, w // 2:] = 4
    Image.fromarray(lab, mode="L").save(path)
    return path


def test_semantic_synthesis_at_training_and_twice_the_size(tiny_models, run_cli, tmp_path):
    script = load_script("semantic_synthesis")
    base = model_args(tiny_models, "semantic") + ["--ddim_steps", "2", "--n_samples", "1", "--skip_grid"]
    small = script.main(base + ["--label-map", str(_labels(tmp_path / "s.png", 16, 16)), "--outdir", str(tmp_path)])
    large = script.main(base + ["--label-map", str(_labels(tmp_path / "l.png", 32, 32)), "--outdir", str(tmp_path)])
    assert Image.open(small[0]).size == (16, 16) and Image.open(large[0]).size == (32, 32)
    assert [small[0].name, large[0].name] == ["00000.png", "00001.png"]
    bad = np.full((16, 16), 7, np.uint8)
    Image.fromarray(bad, mode="L").save(tmp_path / "bad.png")
    code, err = run_cli("semantic_synthesis", base + ["--label-map", str(tmp_path / "bad.png")])
    assert code == 2 and "knows 5 classes" in err
    code, err = run_cli("semantic_synthesis", base + ["--label-map", str(_labels(tmp_path / "o.png", 18, 18))])
    assert code == 2 and "divisible by 4" in err


# ---- benchmark ------------------------------------------------------------------------------------

def test_benchmark_sampling_analytic(tmp_path):
    rows = load_script("benchmark_sampling").main([
        "--analytic", "--n", "1", "--samplers", "ddim:10,dpm_solver_logsnr:10,dpmpp_2m_karras:10",
        "--ref_steps", "200", "--json", str(tmp_path / "b.json")])
    err = {r["sampler"]: r["latent_rms_to_ref"] for r in rows if r["steps"] == 10}
    assert err["dpm_solver_logsnr"] < err["ddim"] and err["dpmpp_2m_karras"] < err["ddim"]
    assert rows[-1]["steps"] == 200 and rows[-1]["latent_rms_to_ref"] == 0
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["sampler"] == "ddim"


def test_every_script_has_help(capsys):
    for name in ("txt2img", "img2img", "inpaint", "sample_diffusion", "superres", "layout2img",
                 "semantic_synthesis", "benchmark_sampling"):
        with pytest.raises(SystemExit) as exit_:
            load_script(name).main(["--help"])
        assert exit_.value.code == 0
        assert "usage" in capsys.readouterr().out
