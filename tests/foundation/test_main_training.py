"""`python main.py ... -t` end to end: log-dir layout, saved configs, overrides, resume, errors."""
from __future__ import annotations

import re

import torch
from omegaconf import OmegaConf

from tests.foundation.run_main import REPO_ROOT, only_run_dir, run_main, write_tiny_config


def test_train_layout_configs_and_resume(tmp_path):
    base = write_tiny_config(tmp_path / "tiny.yaml", max_steps=4)
    override = tmp_path / "wider.yaml"
    override.write_text("model:\n  params:\n    channels: 6\n")
    logs = tmp_path / "logs"
    proc = run_main(["--base", str(base), str(override), "-t", "--accelerator", "cpu", "-l", str(logs),
                     "model.params.channels=8", "--limit_val_batches", "1"], cwd=tmp_path)
    run = only_run_dir(logs)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d_tiny", run.name)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    project = list((run / "configs").glob("*-project.yaml"))
    lightning_cfg = list((run / "configs").glob("*-lightning.yaml"))
    assert len(project) == 1 and len(lightning_cfg) == 1
    saved = OmegaConf.load(project[0])
    assert saved.model.params.channels == 8  # command line beats the second file beats the first
    assert "lightning" not in saved
    assert OmegaConf.load(lightning_cfg[0]).lightning.trainer.max_steps == 4
    train_images = sorted(p.name for p in (run / "images" / "train").glob("*.png"))
    assert "inputs_gs-000002_e-000000_b-000001.png" in train_images
    assert any(name.startswith("reconstructions_gs-000004") for name in train_images)
    assert (run / "images" / "val").is_dir()
    # learning-rate scaling as in the original: accumulate * ngpu * batch_size * base_lr
    assert "Setting learning rate to 2.00e-04 = 1 (accumulate_grad_batches) * 1 (num_gpus) * 2 (batchsize)" in proc.stderr
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 4
    assert first["state_dict"]["net.0.weight"].shape[0] == 8

    run_main(["-r", str(run), "-t", "--accelerator", "cpu", "--max_steps", "7", "--limit_val_batches", "1"],
             cwd=tmp_path)
    assert only_run_dir(logs) == run  # resumed in place
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 7
    assert len(resumed["optimizer_states"]) == 1 and resumed["optimizer_states"][0]["state"]


def test_last_checkpoint_holds_the_final_step_between_validations(tmp_path):
    # 5 steps end mid-epoch (20 batches) and long before the first validation (at batch 1000):
    # ModelCheckpoint writes nothing then, and last.ckpt must still hold step 5
    base = write_tiny_config(tmp_path / "tiny.yaml", max_steps=5,
                             extra={"data.params.train.params.n": 40, "lightning.trainer.val_check_interval": 1000,
                                    "lightning.trainer.check_val_every_n_epoch": None})
    logs = tmp_path / "logs"
    run_main(["--base", str(base), "-t", "--accelerator", "cpu", "-l", str(logs)], cwd=tmp_path)
    checkpoints = only_run_dir(logs) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]  # once, not also last-v1.ckpt
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 5

    # validation (and ModelCheckpoint's last.ckpt) at step 4, the run ends at step 6: last.ckpt is
    # rewritten with step 6
    base = write_tiny_config(tmp_path / "tiny4.yaml", max_steps=6,
                             extra={"data.params.train.params.n": 40, "lightning.trainer.val_check_interval": 4,
                                    "lightning.trainer.check_val_every_n_epoch": None})
    logs = tmp_path / "logs4"
    proc = run_main(["--base", str(base), "-t", "--accelerator", "cpu", "-l", str(logs)], cwd=tmp_path)
    checkpoints = only_run_dir(logs) / "checkpoints"
    assert "last-v1.ckpt" not in {p.name for p in checkpoints.iterdir()}
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6
    assert "training ended at step 6 after the last checkpoint" in proc.stderr


def test_config_error_is_one_line(tmp_path):
    base = write_tiny_config(tmp_path / "tiny.yaml", extra={"model.params.chanels": 3})
    proc = run_main(["--base", str(base), "-t", "-l", str(tmp_path / "logs")], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: model.params: TinyModel does not take 'chanels'; accepted: channels, monitor, fail_at_step"]
    assert "Traceback" not in proc.stderr


def test_unknown_target_is_one_line(tmp_path):
    base = write_tiny_config(tmp_path / "tiny.yaml", extra={"model.target": "ldm.modules.foo.Bar"})
    proc = run_main(["--base", str(base), "-t", "-l", str(tmp_path / "logs")], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: model.target: cannot import 'ldm.modules.foo.Bar'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_flag_shows_traceback(tmp_path):
    base = write_tiny_config(tmp_path / "tiny.yaml", extra={"model.target": "ldm.modules.foo.Bar"})
    proc = run_main(["--base", str(base), "-t", "-d", "-l", str(tmp_path / "logs")], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_crash_writes_last_checkpoint(tmp_path):
    base = write_tiny_config(tmp_path / "tiny.yaml", max_steps=10, extra={"model.params.fail_at_step": 3})
    logs = tmp_path / "logs"
    proc = run_main(["--base", str(base), "-t", "--accelerator", "cpu", "-l", str(logs)], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "planned failure" in proc.stderr
    ckpt = torch.load(only_run_dir(logs) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3


def test_missing_base_file(tmp_path):
    proc = run_main(["--base", str(tmp_path / "nope.yaml"), "-t"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert f"error: config file not found: {tmp_path / 'nope.yaml'}" in proc.stderr


def test_help_lists_trainer_flags():
    proc = run_main(["--help"], cwd=REPO_ROOT)
    for flag in ("--gpus", "--max_steps", "--accumulate_grad_batches", "--strategy", "--finetune_from", "--scale_lr"):
        assert flag in proc.stdout


def test_finetune_from_weights_and_refuse_them_for_resume(tmp_path):
    from tests.helpers.tiny import TinyModel

    released = {k: torch.full_like(v, 0.5) for k, v in TinyModel(channels=4).state_dict().items()}
    torch.save({"state_dict": released}, tmp_path / "released.ckpt")
    base = write_tiny_config(tmp_path / "tiny.yaml", max_steps=1)
    logs = tmp_path / "logs"
    run_main(["--base", str(base), "-t", "--accelerator", "cpu", "-l", str(logs),
              "--finetune_from", str(tmp_path / "released.ckpt"), "--limit_val_batches", "0"], cwd=tmp_path)
    ckpt = torch.load(only_run_dir(logs) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1  # a new run from step 0, one optimizer step taken
    weight = ckpt["state_dict"]["net.0.weight"]
    assert (weight - 0.5).abs().max() < 1e-3 and not torch.equal(weight, torch.full_like(weight, 0.5))

    fake = tmp_path / "fake_run"
    (fake / "checkpoints").mkdir(parents=True)
    (fake / "configs").mkdir()
    (fake / "configs" / "project.yaml").write_text(base.read_text())
    torch.save({"state_dict": released}, fake / "checkpoints" / "last.ckpt")
    proc = run_main(["-r", str(fake), "-t", "--accelerator", "cpu"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "holds weights only" in proc.stderr and "use --finetune_from" in proc.stderr
