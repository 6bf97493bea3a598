"""Benchmark the diffusion UNet at the Stable Diffusion v1 layout.

Reports forward (inference) and forward+backward (training step without the optimizer) time,
samples/s and peak memory, for: SDPA (the default) vs math attention, with and without
gradient checkpointing, fp32 vs bf16 autocast, channels_last, and torch.compile where it works.
On a GPU the full SD v1 width (model_channels 320, 64x64 latents) is the default; on a CPU a
reduced width (64 channels, 32x32 latents) keeps a run to minutes. Every variant runs in a fresh
subprocess, so that its peak memory and compile caches are its own.

Peak memory is what one call allocates on top of what was allocated before it (weights and
inputs excluded; activations, gradients and workspaces included): from
`torch.cuda.max_memory_allocated` on CUDA, and on CPU from the allocation events of
`torch.profiler` (a separate, untimed call).

Examples:
    python scripts/benchmark_unet.py                       # auto device, curated variants
    python scripts/benchmark_unet.py --grid                # every combination
    python scripts/benchmark_unet.py --model-channels 320 --latent-size 64 --batch-size 4 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldm.modules.attention import set_attention_backend  # noqa: E402
from ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402

logger = logging.getLogger("benchmark_unet")

# configs/stable-diffusion/v1-inference.yaml, model.params.unet_config.params
SD_V1_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                  num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                  transformer_depth=1, context_dim=768, legacy=False)


@dataclass(frozen=True)
class Variant:
    """One benchmark configuration."""

    attention: str = "sdpa"
    checkpoint: bool = False
    precision: str = "fp32"  # or "bf16" (autocast)
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        parts = [self.attention, self.precision]
        if self.checkpoint:
            parts.append("checkpoint")
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        return " + ".join(parts)


def curated_variants() -> list[Variant]:
    """Each knob against the SDPA/fp32 baseline, plus the useful combinations."""
    return [
        Variant(),
        Variant(attention="math"),
        Variant(checkpoint=True),
        Variant(attention="math", checkpoint=True),
        Variant(precision="bf16"),
        Variant(attention="math", precision="bf16"),
        Variant(channels_last=True),
        Variant(precision="bf16", channels_last=True),
        Variant(compile=True),
        Variant(precision="bf16", compile=True),
    ]


def grid_variants() -> list[Variant]:
    return [Variant(*combo) for combo in itertools.product(("sdpa", "math"), (False, True), ("fp32", "bf16"),
                                                           (False, True), (False, True))]


# ---- one variant (runs in a subprocess) -------------------------------------------------------


def peak_allocated_bytes(fn, device: torch.device) -> int:
    """Peak bytes allocated during `fn()` above what was allocated when it started."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, warmup: int, repeat: int) -> float:
    """Best (minimum) seconds per call of `fn` over `repeat` calls after `warmup` calls.

    The minimum, as `timeit` recommends: other load on the machine only ever adds time.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def build(spec: dict, variant: Variant, device: torch.device):
    torch.manual_seed(0)
    params = dict(SD_V1_UNET, model_channels=spec["model_channels"], use_checkpoint=variant.checkpoint)
    model = set_attention_backend(UNetModel(**params), variant.attention).to(device)
    b, s = spec["batch_size"], spec["latent_size"]
    x = torch.randn(b, 4, s, s, device=device)
    t = torch.randint(0, 1000, (b,), device=device)
    context = torch.randn(b, spec["context_len"], SD_V1_UNET["context_dim"], device=device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    return model, x, t, context


def run_variant(spec: dict, variant: Variant) -> dict:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model, x, t, context = build(spec, variant, device)
    net = torch.compile(model) if variant.compile else model
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if variant.precision == "bf16"
           else contextlib.nullcontext())

    def forward():
        with torch.no_grad(), amp:
            net(x, t, context)

    def train_step():
        with amp:
            out = net(x, t, context)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    result = {"label": variant.label, **asdict(variant)}
    for name, fn, mode in (("fwd", forward, model.eval), ("fwd_bwd", train_step, model.train)):
        mode()
        seconds = time_it(fn, device, spec["warmup"], spec["repeat"])
        peak = peak_allocated_bytes(fn, device)
        result.update({f"{name}_ms": 1e3 * seconds, f"{name}_samples_per_s": spec["batch_size"] / seconds,
                       f"{name}_peak_mib": peak / 2**20})
    return result


# ---- driver ----------------------------------------------------------------------------------------


def run_in_subprocess(spec: dict, variant: Variant, timeout: float) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps({"spec": spec, "variant": asdict(variant)})]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"label": variant.label, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"label": variant.label, "error": tail[:160]}
    return json.loads(lines[-1])


def best_of(previous: dict, new: dict) -> dict:
    """Merge two runs of one variant: the faster time of each measurement (errors only if both failed)."""
    if not previous or "error" in previous:
        return new
    if "error" in new:
        return previous
    merged = dict(previous)
    for name in ("fwd", "fwd_bwd"):
        if new[f"{name}_ms"] < previous[f"{name}_ms"]:
            for key in (f"{name}_ms", f"{name}_samples_per_s"):
                merged[key] = new[key]
    return merged


def format_table(spec: dict, results: list[dict]) -> str:
    mem = "peak MiB"
    header = (f"| variant | fwd ms | fwd samples/s | fwd {mem} | fwd+bwd ms | fwd+bwd samples/s | "
              f"fwd+bwd {mem} |\n|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for r in results:
        if "error" in r:
            rows.append(f"| {r['label']} | n/a ({r['error']}) | | | | | |")
            continue
        rows.append(f"| {r['label']} | {r['fwd_ms']:.1f} | {r['fwd_samples_per_s']:.2f} | {r['fwd_peak_mib']:.0f} | "
                    f"{r['fwd_bwd_ms']:.1f} | {r['fwd_bwd_samples_per_s']:.2f} | {r['fwd_bwd_peak_mib']:.0f} |")
    return "\n".join([header, *rows])


def compare_backends(results: list[dict]) -> list[str]:
    """One line per pair of rows that differ only in the attention backend: SDPA speed-up over math."""
    by_key = {(r["checkpoint"], r["precision"], r["channels_last"], r["compile"], r["attention"]): r
              for r in results if "error" not in r}
    lines = []
    for key, sdpa in by_key.items():
        if key[-1] != "sdpa" or (math_row := by_key.get((*key[:-1], "math"))) is None:
            continue
        lines.append(f"SDPA vs math [{sdpa['label']}]: forward x{math_row['fwd_ms'] / sdpa['fwd_ms']:.2f}, "
                     f"forward+backward x{math_row['fwd_bwd_ms'] / sdpa['fwd_bwd_ms']:.2f}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model-channels", type=int, help="UNet width (default 320 on GPU, 64 on CPU)")
    p.add_argument("--latent-size", type=int, help="latent side (default 64 on GPU = 512 px, 32 on CPU)")
    p.add_argument("--batch-size", type=int, help="default 8 on GPU, 2 on CPU")
    p.add_argument("--context-len", type=int, default=77)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice); 1 is the most "
                   "stable on a shared CPU, where spinning OpenMP threads lose their time slices")
    p.add_argument("--warmup", type=int, help="untimed calls per measurement (default 3 on GPU, 1 on CPU)")
    p.add_argument("--repeat", type=int, help="timed calls per measurement (default 10 on GPU, 3 on CPU)")
    p.add_argument("--grid", action="store_true", help="every combination instead of the curated variants")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--only", nargs="*", help="run only variants whose label contains one of these words")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the variant list this many times, interleaved, and keep each variant's best times")
    p.add_argument("--timeout", type=float, default=900, help="seconds per variant")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> dict:
    gpu = args.device.startswith("cuda")
    return {
        "device": args.device,
        "model_channels": args.model_channels or (320 if gpu else 64),
        "latent_size": args.latent_size or (64 if gpu else 32),
        "batch_size": args.batch_size or (8 if gpu else 2),
        "context_len": args.context_len,
        "warmup": args.warmup if args.warmup is not None else (3 if gpu else 1),
        "repeat": args.repeat or (10 if gpu else 5),
        "threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(run_variant(job["spec"], Variant(**job["variant"]))))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = spec_from_args(args)
    variants = grid_variants() if args.grid else curated_variants()
    if args.no_compile:
        variants = [v for v in variants if not v.compile]
    if args.only:
        variants = [v for v in variants if any(word in v.label for word in args.only)]
    logger.info("UNet (SD v1 layout) %s", json.dumps(spec))
    results: list[dict] = [{} for _ in variants]
    for _ in range(args.rounds):
        for i, variant in enumerate(variants):
            result = run_in_subprocess(spec, variant, args.timeout)
            logger.info("%s: %s", variant.label, result.get("error") or
                        f"fwd {result['fwd_ms']:.1f} ms, fwd+bwd {result['fwd_bwd_ms']:.1f} ms")
            results[i] = best_of(results[i], result)
    print(format_table(spec, results))
    for line in compare_backends(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"spec": spec, "results": results}, indent=2))


if __name__ == "__main__":
    main()
