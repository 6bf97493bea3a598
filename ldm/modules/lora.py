"""LoRA: low-rank adapters on the attention projections of the UNet (Hu et al. 2021, LoRA).

A wrapped layer keeps its frozen base weight `W` under its original name (so released keys
still load) and adds `lora_A` [r, in] and `lora_B` [out, r]; its output is
`W x + b + (alpha / r) * B A x`. `B` starts at zero, so a freshly wrapped model computes
exactly what the base model does. `merge_lora` folds `W + (alpha / r) * B A` back into plain
layers, giving a model with the released key layout again.

    targets = inject_lora(model.model.diffusion_model, rank=4, alpha=4)
    freeze_all_but_lora(model)
    ... train ...
    save_lora(model, "lora.safetensors")          # only the adapter weights + rank/alpha/targets
    load_lora(other_model, "lora.safetensors")    # wraps the same layers, loads strictly
    merge_lora(other_model)

Layers that can be wrapped: `nn.Linear` and 1x1 `nn.Conv2d` (e.g. `proj_in`/`proj_out` of the
SD v1 SpatialTransformer). The default targets are the cross- and self-attention projections
`to_q`, `to_k`, `to_v`, `to_out.0`.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
LORA_PARAM_NAMES: tuple[str, ...] = ("lora_A", "lora_B")


class _LoRAMixin:
    """Shared state of the LoRA layers: rank, alpha, scale, dropout and the two factors."""

    lora_A: nn.Parameter
    lora_B: nn.Parameter

    def _init_lora(self, a_shape: tuple[int, ...], b_shape: tuple[int, ...], rank: int, alpha: float,
                   dropout: float, like: torch.Tensor) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scale = self.alpha / self.rank
        factory = {"device": like.device, "dtype": like.dtype}
        self.lora_A = nn.Parameter(torch.empty(a_shape, **factory))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, **factory))
        if not like.is_meta:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """`(alpha / r) * B @ A`, shaped like the base weight."""
        a = self.lora_A.reshape(self.lora_A.shape[0], -1)
        b = self.lora_B.reshape(self.lora_B.shape[0], -1)
        return ((b @ a) * self.scale).reshape(self.weight.shape)


class LoRALinear(_LoRAMixin, nn.Linear):
    """`nn.Linear` with a low-rank update; `weight`/`bias` are the base layer's parameters."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self._init_lora((rank, base.in_features), (base.out_features, rank), rank,
                        rank if alpha is None else alpha, dropout, base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + update * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.delta_weight().to(self.weight.dtype))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        out.weight.requires_grad_(self.weight.requires_grad)
        return out


class LoRAConv1x1(_LoRAMixin, nn.Conv2d):
    """1x1 `nn.Conv2d` (stride 1, no groups) with a low-rank update."""

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float | None = None, dropout: float = 0.0):
        if base.kernel_size != (1, 1) or base.stride != (1, 1) or base.groups != 1:
            raise ValueError("LoRAConv1x1 wraps 1x1 convolutions with stride 1 and groups 1 only")
        nn.Module.__init__(self)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode"):
            setattr(self, attr, getattr(base, attr))
        self._reversed_padding_repeated_twice = base._reversed_padding_repeated_twice
        self.weight = base.weight
        self.bias = base.bias
        self._init_lora((rank, base.in_channels, 1, 1), (base.out_channels, rank, 1, 1), rank,
                        rank if alpha is None else alpha, dropout, base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.conv2d(F.conv2d(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.conv2d(x, self.weight, self.bias) + update * self.scale

    def merged(self) -> nn.Conv2d:
        out = nn.Conv2d(self.in_channels, self.out_channels, 1, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.delta_weight().to(self.weight.dtype))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


LORA_LAYERS = (LoRALinear, LoRAConv1x1)


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    parent._modules[child] = new


def inject_lora(root: nn.Module, rank: int = 4, alpha: float | None = None,
                target_modules: Sequence[str] = DEFAULT_TARGETS, dropout: float = 0.0) -> list[str]:
    """Wrap every `nn.Linear` / 1x1 `nn.Conv2d` under `root` whose name ends with a target.

    Args:
        root: the module to adapt (the UNet: `model.model.diffusion_model`).
        rank: r, the inner dimension of the update.
        alpha: the update is scaled by alpha / r (default alpha = r, scale 1).
        target_modules: module-name suffixes to wrap (`to_q` matches `...attn1.to_q`).
        dropout: dropout on the adapter input during training.

    Returns the names of the wrapped modules (already wrapped ones are left alone).
    """
    targets = tuple(target_modules)
    wrapped = []
    for name, module in list(root.named_modules()):
        if not name or not _matches(name, targets) or isinstance(module, LORA_LAYERS):
            continue
        if isinstance(module, nn.Linear):
            new = LoRALinear(module, rank, alpha, dropout)
        elif isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            new = LoRAConv1x1(module, rank, alpha, dropout)
        else:
            raise TypeError(f"LoRA target '{name}' is a {type(module).__name__}; only Linear and 1x1 Conv2d can be wrapped")
        new.lora_target = next(t for t in targets if _matches(name, [t]))
        _replace(root, name, new)
        wrapped.append(name)
    if not wrapped and not any(isinstance(m, LORA_LAYERS) for m in root.modules()):
        raise ValueError(f"LoRA: no module under {type(root).__name__} matches {', '.join(targets)}")
    return wrapped


def lora_modules(root: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in root.named_modules() if isinstance(m, LORA_LAYERS)}


def is_lora_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in LORA_PARAM_NAMES


def freeze_all_but_lora(module: nn.Module) -> int:
    """Make only LoRA factors trainable; returns the number of trainable parameters."""
    count = 0
    for name, param in module.named_parameters():
        train = is_lora_key(name)
        param.requires_grad_(train)
        count += param.numel() if train else 0
    return count


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if is_lora_key(k)}


def lora_settings(module: nn.Module) -> dict:
    """rank, alpha and the target suffixes of the LoRA layers under `module`."""
    layers = lora_modules(module)
    if not layers:
        raise ValueError("LoRA: the module has no LoRA layers")
    first = next(iter(layers.values()))
    targets = sorted({getattr(m, "lora_target", name.rsplit(".", 1)[-1]) for name, m in layers.items()})
    return {"rank": first.rank, "alpha": first.alpha, "target_modules": targets}


def save_lora(module: nn.Module, path: str | os.PathLike, extra_metadata: dict | None = None) -> None:
    """Write only the LoRA weights as safetensors (rank, alpha, targets in the metadata)."""
    from safetensors.torch import save_file

    from ldm.checkpoint.saving import atomic_write, safetensors_payload

    settings = lora_settings(module)
    metadata = {"format": "pt", "lora_rank": str(settings["rank"]), "lora_alpha": str(settings["alpha"]),
                "lora_target_modules": json.dumps(settings["target_modules"])}
    metadata.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    payload = safetensors_payload(lora_state_dict(module))
    atomic_write(os.fspath(path), lambda tmp: save_file(payload, tmp, metadata=metadata))


def load_lora(module: nn.Module, path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Wrap the layers named in a LoRA file (if not wrapped yet) and load its weights.

    Returns the names of the LoRA layers loaded. With `strict`, every key of the file must
    name a LoRA factor of `module` with the same shape, and every LoRA layer must get weights.
    """
    from ldm.checkpoint import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path)
    weights, meta = ckpt["state_dict"], ckpt.get("metadata", {})
    if not weights or not all(is_lora_key(k) for k in weights):
        raise CheckpointError(f"{path}: not a LoRA file (keys must end in lora_A / lora_B)")
    rank = int(meta.get("lora_rank", next(iter(weights.values())).shape[0]))
    alpha = float(meta.get("lora_alpha", rank))
    targets = json.loads(meta.get("lora_target_modules", "[]"))
    owners = sorted({k.rsplit(".", 1)[0] for k in weights})
    for owner in owners:
        try:
            sub = module.get_submodule(owner)
        except AttributeError:
            raise CheckpointError(f"{path}: LoRA layer '{owner}' does not exist in {type(module).__name__}") from None
        if not isinstance(sub, LORA_LAYERS):
            new = (LoRALinear if isinstance(sub, nn.Linear) else LoRAConv1x1)(sub, rank, alpha)
            new.lora_target = next((t for t in targets if _matches(owner, [t])), owner.rsplit(".", 1)[-1])
            _replace(module, owner, new)
    own = lora_state_dict(module)
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [k for k in weights if k in own and tuple(own[k].shape) != tuple(weights[k].shape)]
    if strict and (missing or unexpected or wrong):
        raise CheckpointError(f"{path}: LoRA weights do not fit: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, wrong shape {wrong[:3]}")
    module.load_state_dict({k: v for k, v in weights.items() if k in own and k not in wrong}, strict=False)
    return owners


def merge_lora(module: nn.Module) -> int:
    """Replace every LoRA layer by a plain layer with `W + (alpha/r) B A`; returns the count."""
    layers = lora_modules(module)
    for name, layer in layers.items():
        _replace(module, name, layer.merged())
    return len(layers)
