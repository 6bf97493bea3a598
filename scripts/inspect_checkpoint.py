#!/usr/bin/env python
"""Print what a checkpoint file holds: format, training counters, key groups with parameter
counts, the detected model family (and whether EMA weights are present) and its config.

    python scripts/inspect_checkpoint.py models/ldm/cin256/model.ckpt
    python scripts/inspect_checkpoint.py sd-v1-4.ckpt --depth 3 --json

Pickle files are read safely (no code runs); `--unsafe-pickle` is for files you trust that
the safe reader refuses.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.checkpoint import (
    CheckpointError,
    detect_family,
    detect_format,
    has_ema,
    load_checkpoint,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def key_groups(state_dict: dict, depth: int) -> OrderedDict[str, dict]:
    groups: OrderedDict[str, dict] = OrderedDict()
    for key, tensor in state_dict.items():
        parts = key.split(".")
        prefix = ".".join(parts[:min(depth, max(1, len(parts) - 1))]) if len(parts) > 1 else "(top level)"
        group = groups.setdefault(prefix, {"tensors": 0, "numel": 0, "dtypes": set()})
        group["tensors"] += 1
        group["numel"] += int(tensor.numel())
        group["dtypes"].add(str(tensor.dtype).replace("torch.", ""))
    return groups


def inspect(path: str, depth: int = 2, unsafe_pickle: bool = False) -> dict:
    fmt = detect_format(path)
    ckpt = load_checkpoint(path, unsafe_pickle=unsafe_pickle)
    sd = ckpt["state_dict"]
    family = detect_family(sd)
    configs = []
    if family is not None:
        configs = [{"path": c, "exists": os.path.isfile(os.path.join(REPO_ROOT, c))} for c in family.configs]
    return {
        "file": path,
        "format": fmt,
        "size_bytes": os.path.getsize(path),
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "lightning_version": ckpt.get("pytorch-lightning_version"),
        "other_entries": sorted(k for k in ckpt if k not in ("state_dict", "global_step", "epoch", "pytorch-lightning_version")),
        "num_tensors": len(sd),
        "num_elements": int(sum(t.numel() for t in sd.values())),
        "groups": {k: {"tensors": v["tensors"], "numel": v["numel"], "dtypes": sorted(v["dtypes"])}
                   for k, v in key_groups(sd, depth).items()},
        "family": family.name if family else None,
        "description": family.description if family else "unknown model",
        "supported": bool(family and family.supported),
        "ema_present": has_ema(sd),
        "configs": configs,
        "embedded_config": "config" in ckpt,
    }


def print_report(info: dict) -> None:
    print(f"file:        {info['file']} ({info['size_bytes'] / 2**20:.1f} MiB)")
    print(f"format:      {info['format']}")
    print(f"global step: {info['global_step']}   epoch: {info['epoch']}   lightning: {info['lightning_version']}")
    if info["other_entries"]:
        print(f"also holds:  {', '.join(info['other_entries'])}")
    print(f"tensors:     {info['num_tensors']} ({info['num_elements']:,} elements)")
    print("key groups:")
    for prefix, g in info["groups"].items():
        print(f"  {prefix:48s} {g['tensors']:6d} tensors {g['numel']:>15,d}  {'/'.join(g['dtypes'])}")
    support = "" if info["supported"] else "  [not supported by this project]"
    print(f"model:       {info['description']}{support}")
    print(f"EMA weights: {'yes' if info['ema_present'] else 'no'}")
    for c in info["configs"]:
        print(f"config:      {c['path']}{'' if c['exists'] else '  (not in this checkout)'}")
    if info["embedded_config"]:
        print("config:      embedded in the file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Show what a checkpoint holds.")
    parser.add_argument("checkpoint")
    parser.add_argument("--depth", type=int, default=2, help="key components per group (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--unsafe-pickle", action="store_true", help="allow pickles that run code (trusted files only)")
    args = parser.parse_args(argv)
    try:
        info = inspect(args.checkpoint, args.depth, args.unsafe_pickle)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_report(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
