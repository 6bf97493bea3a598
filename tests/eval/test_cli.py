"""scripts/evaluate.py end to end on tiny folders, with the stub extractor and with weights."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.eval.inception import FIDInceptionV3

REPO = Path(__file__).resolve().parents[2]
# loaded by path: "evaluate" is also the name of a PyPI package
_spec = importlib.util.spec_from_file_location("ldm_scripts_evaluate", REPO / "scripts" / "evaluate.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def _folder(path: Path, n: int, seed: int, size: int = 32) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


@pytest.fixture()
def folders(tmp_path):
    return _folder(tmp_path / "samples", 12, 0), _folder(tmp_path / "reference", 12, 1)


def _run(args: list, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_computes_every_feature_and_paired_metric_with_the_stub(folders, tmp_path, capsys):
    samples, reference = folders
    out_json = tmp_path / "res.json"
    code, out, err = _run([samples, reference, "--metrics", "fid,kid,is,pr,psnr,ssim",
                           "--feature-extractor", "pixels", "--kid-subset-size", "6",
                           "--kid-subsets", "5", "--isc-splits", "2", "--batch-size", "5",
                           "--cache-dir", tmp_path / "cache", "--output", out_json], capsys)
    assert code == 0, err
    report = json.loads(out_json.read_text())
    metrics = report["metrics"]
    for key in ("fid", "kid_mean", "kid_std", "isc_mean", "isc_std", "precision", "recall",
                "psnr", "ssim", "num_samples", "num_reference"):
        assert key in metrics, key
        assert key in out  # the printed table
    assert metrics["num_samples"] == 12 and metrics["fid"] > 0 and metrics["isc_mean"] >= 1.0
    assert 0.0 <= metrics["precision"] <= 1.0 and 0 < metrics["ssim"] < 0.5
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # reference statistics cached


def test_fid_of_a_folder_against_itself_is_zero_and_the_cache_is_reused(folders, tmp_path, capsys):
    samples, _ = folders
    cache = tmp_path / "cache"
    args = [samples, samples, "--feature-extractor", "pixels", "--cache-dir", cache,
            "--output", tmp_path / "a.json"]
    assert _run(args, capsys)[0] == 0
    cached = next(cache.glob("*.npz"))
    stamp = cached.stat().st_mtime_ns
    assert _run(args, capsys)[0] == 0
    assert cached.stat().st_mtime_ns == stamp
    assert abs(json.loads((tmp_path / "a.json").read_text())["metrics"]["fid"]) < 1e-6


def test_cli_runs_the_inception_network_from_a_weights_file(tmp_path, capsys):
    samples = _folder(tmp_path / "s", 2, 0, size=24)
    reference = _folder(tmp_path / "r", 2, 1, size=24)
    weights = tmp_path / "pt_inception.pth"
    torch.manual_seed(0)
    net = FIDInceptionV3()
    # PyTorch's default init shrinks the signal through 90 layers to ~1e-8 (every image alike:
    # FID 0, IS 1); a ReLU-gain init keeps the images apart so the metrics below mean something
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), weights)
    code, out, err = _run([samples, reference, "--metrics", "fid,isc", "--isc-splits", "1",
                           "--inception-weights", weights, "--no-cache", "--device", "cpu",
                           "--output", tmp_path / "r.json"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["feature_extractor"] == "inception-v3-compat"
    assert np.isfinite(report["metrics"]["fid"]) and report["metrics"]["fid"] > 1e-6
    assert report["metrics"]["isc_mean"] > 1.0


def test_saved_reference_statistics_serve_as_an_input(folders, tmp_path, capsys):
    samples, reference = folders
    stats = tmp_path / "ref_stats.npz"
    base = ["--feature-extractor", "pixels", "--no-cache"]
    assert _run([samples, reference, *base, "--save-stats", stats, "--output", tmp_path / "1.json"],
                capsys)[0] == 0
    assert _run([samples, stats, *base, "--output", tmp_path / "2.json"], capsys)[0] == 0
    first = json.loads((tmp_path / "1.json").read_text())["metrics"]["fid"]
    second = json.loads((tmp_path / "2.json").read_text())["metrics"]["fid"]
    assert second == pytest.approx(first, rel=1e-12)
    np.savez(tmp_path / "mu_sigma.npz", mu=np.zeros(192), sigma=np.eye(192))
    code, _, err = _run([samples, tmp_path / "mu_sigma.npz", *base, "--metrics", "kid",
                         "--output", tmp_path / "3.json"], capsys)
    assert code == 2 and "only mu/sigma" in err


@pytest.mark.parametrize("args, message", [
    (["{tmp}/absent", "{tmp}/absent2"], "input not found"),
    (["{samples}", "{reference}", "--metrics", "fid,bogus"], "unknown metric"),
    (["{samples}", "--metrics", "fid"], "need a reference"),
    (["{samples}", "{reference}", "--metrics", "psnr", "--num-reference", "3"], "as many samples"),
    (["{samples}", "{reference}", "--metrics", "kid", "--kid-subset-size", "100"], "subset size"),
    (["{samples}", "{reference}", "--inception-weights", "{tmp}/none.pth"], "weights not found"),
    (["{samples}", "--metrics", "clip"], "caption"),
])
def test_bad_input_gives_one_line_and_exit_code_2(folders, tmp_path, capsys, args, message):
    samples, reference = folders
    fill = {"tmp": tmp_path, "samples": samples, "reference": reference}
    argv = [a.format(**fill) for a in args] + ["--feature-extractor", "pixels", "--no-cache",
                                               "--output", str(tmp_path / "x.json")]
    if "--inception-weights" in args:
        argv[argv.index("pixels")] = "inception-v3-compat"
    code, out, err = _run(argv, capsys)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "x.json").exists()


def test_help_and_exit_codes_in_a_real_process(capsys):
    script = str(REPO / "scripts" / "evaluate.py")
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--preset" in result.stdout and "--metrics" in result.stdout
    result = subprocess.run([sys.executable, script, "/no/such/dir", "/x"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "error: input not found: /no/such/dir"
    assert cli.main(["--list-presets"]) == 0 and "celebahq256" in capsys.readouterr().out
