"""A GAN-trained autoencoder through `python main.py -t`: manual optimization in Lightning 2.

The released KL configs put `accumulate_grad_batches` under `lightning.trainer`; Lightning 2
refuses it for manual optimization, so main.py hands it (and gradient clipping) to the model.
"""
from __future__ import annotations

import torch
import yaml

from tests.foundation.run_main import only_run_dir, run_main

CONFIG = {
    "model": {
        "base_learning_rate": 4.5e-6,
        "target": "ldm.models.autoencoder.AutoencoderKL",
        "params": {
            "embed_dim": 2,
            "lossconfig": {"target": "ldm.modules.losses.LPIPSWithDiscriminator",
                           "params": {"disc_start": 2, "kl_weight": 1e-6, "disc_weight": 0.5,
                                      "perceptual_weight": 0.0, "disc_num_layers": 1, "disc_ndf": 8}},
            "ddconfig": {"double_z": True, "z_channels": 2, "resolution": 8, "in_channels": 3, "out_ch": 3,
                         "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0},
        },
    },
    "data": {"target": "main.DataModuleFromConfig",
             "params": {"batch_size": 2, "num_workers": 0,
                        "train": {"target": "tests.helpers.tiny.TinyImages", "params": {"n": 8}},
                        "validation": {"target": "tests.helpers.tiny.TinyImages", "params": {"n": 2, "seed": 1}}}},
    "lightning": {"trainer": {"accumulate_grad_batches": 2, "gradient_clip_val": 1.0, "max_steps": 8,
                              "enable_progress_bar": False, "log_every_n_steps": 1},
                  "callbacks": {"image_logger": {"target": "main.ImageLogger",
                                                 "params": {"batch_frequency": 4, "max_images": 2,
                                                            "increase_log_steps": False}}}},
}


def test_kl_autoencoder_trains_through_main(tmp_path):
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(CONFIG))
    logs = tmp_path / "logs"
    proc = run_main(["--base", str(tmp_path / "ae.yaml"), "-t", "--accelerator", "cpu", "-l", str(logs),
                     "--limit_val_batches", "1"], cwd=tmp_path)
    run = only_run_dir(logs)
    # accumulation 2 enters the learning-rate formula as in the original
    assert "= 2 (accumulate_grad_batches) * 1 (num_gpus) * 2 (batchsize)" in proc.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8  # Lightning counts the steps of both optimizers
    assert len(ckpt["optimizer_states"]) == 2
    assert any(k.startswith("loss.discriminator.") for k in ckpt["state_dict"])
    names = {p.name.split("_gs-")[0] for p in (run / "images" / "train").glob("*.png")}
    assert {"inputs", "reconstructions"} <= names
