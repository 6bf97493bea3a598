#!/usr/bin/env python
"""Encode / decode throughput and peak memory of a first-stage autoencoder.

    python scripts/benchmark_autoencoder.py                      # kl-f8, 256x256, batch 1
    python scripts/benchmark_autoencoder.py --batch-size 8 --dtypes fp32,bf16 --device cuda
    python scripts/benchmark_autoencoder.py --config models/first_stage_models/vq-f4/config.yaml

The model is built from the config's `model` section with the training loss replaced by
`torch.nn.Identity` (no LPIPS weights needed) and random weights unless `--ckpt` is given;
throughput does not depend on the weights. Encode = image -> posterior mode (KL) or
pre-quantization latent (VQ); decode = latent -> image. bf16 runs under autocast and is
skipped where the device does not support it. Peak memory: CUDA max allocated; on CPU the
peak resident set of a process that benchmarks only that dtype (each dtype runs in its own
child process), which includes the model weights and the Python runtime.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldm.util import instantiate_from_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="models/first_stage_models/kl-f8/config.yaml")
    p.add_argument("--ckpt", default=None, help="optional weights (state dict / Lightning checkpoint)")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile encoder and decoder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)  # child process mode
    return p.parse_args()


def build_model(config: str, ckpt: str | None, device: str) -> torch.nn.Module:
    cfg = OmegaConf.load(config)
    cfg.model.params.lossconfig = {"target": "torch.nn.Identity"}
    model = instantiate_from_config(cfg.model)
    if ckpt:
        model.init_from_ckpt(ckpt)
    return model.eval().to(device)


def dtype_supported(dtype: torch.dtype, device: str) -> bool:
    if dtype == torch.float32:
        return True
    if device.startswith("cuda"):
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    try:  # CPU autocast: bf16 works on current torch; fp16 convolutions may not
        with torch.autocast(device_type="cpu", dtype=dtype):
            torch.nn.functional.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3))
        return True
    except RuntimeError:
        return False


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def time_call(fn, warmup: int, iters: int, device: str) -> float:
    """Mean seconds per call after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


@torch.no_grad()
def bench(model, args, dtype: torch.dtype) -> dict[str, float]:
    device = args.device
    x = torch.rand(args.batch_size, model.encoder.in_channels, args.resolution, args.resolution,
                   device=device) * 2 - 1
    is_kl = hasattr(model, "quant_conv") and model.quant_conv.out_channels == 2 * model.embed_dim

    def encode():
        return model.encode(x).mode() if is_kl else model.encode_to_prequant(x)

    autocast = torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with autocast:
        z = encode()
        decode = lambda: model.decode(z)
        t_enc = time_call(encode, args.warmup, args.iters, device)
        t_dec = time_call(decode, args.warmup, args.iters, device)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = peak_rss_mib()
    return {"enc_ips": args.batch_size / t_enc, "dec_ips": args.batch_size / t_dec,
            "enc_ms": 1000 * t_enc, "dec_ms": 1000 * t_dec, "peak_mib": peak,
            "latent": tuple(z.shape[1:])}


def print_row(name: str, model, args) -> None:
    dtype = DTYPES[name]
    if not dtype_supported(dtype, args.device):
        print(f"{name:6} skipped: not supported on {args.device}")
        return
    r = bench(model, args, dtype)
    print(f"{name:6} {r['enc_ips']:13.2f} {r['enc_ms']:11.1f} {r['dec_ips']:13.2f} {r['dec_ms']:11.1f} "
          f"{r['peak_mib']:20.0f}  {r['latent']}", flush=True)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.dtypes.split(",")]
    cpu = not args.device.startswith("cuda")
    if not args.row_only:
        n_threads = torch.get_num_threads()
        device_name = f"cpu ({n_threads} threads)" if cpu else torch.cuda.get_device_name()
        print(f"config {args.config} | {args.resolution}x{args.resolution} batch {args.batch_size} | "
              f"{device_name} | torch {torch.__version__}")
        mem_label = "peak RSS MiB" if cpu else "peak alloc MiB"
        print(f"{'dtype':6} {'encode img/s':>13} {'(ms/batch)':>11} {'decode img/s':>13} {'(ms/batch)':>11} "
              f"{mem_label:>20}  latent", flush=True)
        if cpu and len(names) > 1:  # one process per dtype, so that the peak RSS is its own
            for name in names:
                argv = [a for a in sys.argv[1:]]
                subprocess.run([sys.executable, __file__, *argv, "--dtypes", name, "--row-only",
                                "--threads", str(n_threads)], check=True)
            return
    torch.manual_seed(0)
    model = build_model(args.config, args.ckpt, args.device)
    if args.compile:
        model.encoder = torch.compile(model.encoder)
        model.decoder = torch.compile(model.decoder)
    for name in names:
        print_row(name, model, args)


if __name__ == "__main__":
    main()
