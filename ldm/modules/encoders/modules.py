"""Condition encoders: class labels, text (BERT-style transformer, frozen CLIP), spatial maps.

Each encoder maps a raw condition (a batch dict with labels, a list of strings, a token
tensor, an image-like map) to what the UNet consumes (`encode`). For classifier-free
guidance every encoder can also produce its *null* condition (`null_condition`: the empty
prompt, the null class, ...) and replace chosen batch entries by it (`drop_conditions`), so
that conditioning dropout during training and the unconditional branch at sampling use the
same value.

Pretrained parts (the BERT tokenizer, CLIP) load through transformers' `from_pretrained`:
`version` is a hub name (downloaded once into the Hugging Face cache, `HF_HOME`) or a local
directory. The `device` arguments of the original constructors are accepted for config
compatibility and ignored: tensors go to the device of the module.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.x_transformer import Encoder, TransformerWrapper

logger = logging.getLogger(__name__)

INTERPOLATION_MODES = ("nearest", "linear", "bilinear", "trilinear", "bicubic", "area")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def module_device(module: nn.Module) -> torch.device:
    """The device of the first parameter or buffer of `module` (CPU for an empty module)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _select(drop: torch.Tensor, null: Any, cond: Any) -> Any:
    """`null` where `drop` is True, `cond` elsewhere, for tensors, lists and dicts of them."""
    if isinstance(cond, Mapping):
        return {k: _select(drop, null[k], v) if k in null else v for k, v in cond.items()}
    if torch.is_tensor(cond):
        mask = drop.to(cond.device).reshape(-1, *((1,) * (cond.ndim - 1)))
        return torch.where(mask, torch.as_tensor(null, device=cond.device, dtype=cond.dtype), cond)
    return [n if d else c for d, n, c in zip(drop.tolist(), null, cond)]


def _from_pretrained(cls: type, version: str, what: str) -> Any:
    """`cls.from_pretrained(version)` with a one-line error when it cannot be loaded."""
    try:
        return cls.from_pretrained(version)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(
            f"cannot load the {what} '{version}' ({reason}); pass a local directory, or download it once "
            f"into the Hugging Face cache (HF_HOME) with network access"
        ) from err


class AbstractEncoder(nn.Module):
    """Base class of the condition encoders: `encode(raw condition) -> conditioning`."""

    def encode(self, *args, **kwargs):
        raise NotImplementedError

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The raw condition meaning "no condition" for `batch_size` samples (input of `encode`)."""
        raise NotImplementedError(f"{type(self).__name__} has no null condition")

    def drop_conditions(self, cond: Any, drop: torch.Tensor) -> Any:
        """Replace the batch entries of the raw condition `cond` where `drop` [B] is True by the
        null condition (conditioning dropout for classifier-free guidance)."""
        return _select(drop.bool(), self.null_condition(len(drop), device=drop.device), cond)

    def encode_null(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """`encode(null_condition(batch_size))`: the unconditional conditioning for sampling."""
        return self.encode(self.null_condition(batch_size, device=device))


class IdentityEncoder(AbstractEncoder):
    """Passes the condition through unchanged."""

    def encode(self, x: Any) -> Any:
        return x


class ClassEmbedder(AbstractEncoder):
    """Embeds class labels `batch[key]` [B] into a one-token context [B, 1, embed_dim].

    Args:
        embed_dim: embedding width (the UNet's `context_dim`).
        n_classes: number of classes (rows of `embedding.weight`).
        key: batch key holding the labels.
        add_null_class: add one extra row (index `n_classes`) as the null class for
            classifier-free guidance; changes the key shape, so it is off for the releases.
        null_class: index of the null class when it is already among the `n_classes` rows
            (e.g. 1000 for the released `cin256-v2` config with `n_classes: 1001`).
    """

    def __init__(self, embed_dim: int, n_classes: int = 1000, key: str = "class", add_null_class: bool = False,
                 null_class: int | None = None):
        super().__init__()
        if add_null_class and null_class is not None:
            raise ValueError("ClassEmbedder: give either add_null_class or null_class, not both")
        if null_class is not None and not 0 <= null_class < n_classes:
            raise ValueError(f"ClassEmbedder: null_class {null_class} is not in [0, {n_classes})")
        self.key = key
        self.n_classes = n_classes
        self._null_class = n_classes if add_null_class else null_class
        self.embedding = nn.Embedding(n_classes + int(add_null_class), embed_dim)

    @property
    def null_class(self) -> int | None:
        """Index of the null class, or None when the embedding has none."""
        return self._null_class

    def forward(self, batch: Mapping[str, torch.Tensor], key: str | None = None) -> torch.Tensor:
        labels = batch[self.key if key is None else key]
        return self.embedding(labels.to(module_device(self)).long()[:, None])

    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self(batch)

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        if self._null_class is None:
            raise ValueError("ClassEmbedder has no null class: set add_null_class (new models) or null_class")
        device = module_device(self) if device is None else device
        return {self.key: torch.full((batch_size,), self._null_class, dtype=torch.long, device=device)}


class TransformerEmbedder(AbstractEncoder):
    """A transformer over token ids trained from scratch (token ids in, [B, N, n_embed] out).

    Args:
        n_embed: token width.
        n_layer: number of (attention, feed-forward) pairs.
        vocab_size: vocabulary size.
        max_seq_len: number of learned positions.
        device: ignored (the module's device is used).
    """

    def __init__(self, n_embed: int, n_layer: int, vocab_size: int, max_seq_len: int = 77, device: Any = None):
        super().__init__()
        self.transformer = TransformerWrapper(num_tokens=vocab_size, max_seq_len=max_seq_len,
                                              attn_layers=Encoder(dim=n_embed, depth=n_layer))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens.to(module_device(self)), return_embeddings=True)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self(tokens)


class BERTTokenizer(AbstractEncoder):
    """The uncased BERT WordPiece tokenizer (30522 tokens), padded/truncated to `max_length`.

    Args:
        device: ignored (tokens are returned on the CPU; encoders move them).
        vq_interface: `encode` returns `(None, None, [None, None, tokens])` like a VQ model.
        max_length: sequence length (including [CLS] and [SEP]).
        version: hub name or local directory of a `BertTokenizerFast`.
        cache_size: token ids of up to this many distinct texts are kept, so captions that recur
            (every epoch of a captioned data set) are tokenized once; 0 turns the cache off.
    """

    def __init__(self, device: Any = None, vq_interface: bool = True, max_length: int = 77,
                 version: str = "bert-base-uncased", cache_size: int = 65536):
        super().__init__()
        from transformers import BertTokenizerFast

        self.tokenizer = _from_pretrained(BertTokenizerFast, version, "BERT tokenizer")
        if len(self.tokenizer) < 1000:  # e.g. a vocab file that was not read
            raise ValueError(f"BERT tokenizer '{version}' has only {len(self.tokenizer)} tokens: vocabulary not loaded")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.vq_interface = vq_interface
        self.max_length = max_length
        self.cache_size = cache_size
        self._ids: dict[str, np.ndarray] = {}  # int32 rows: about 0.4 kB per text at length 77

    def _tokenize(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding="max_length")["input_ids"]
        return np.asarray(ids, dtype=np.int32)

    def forward(self, text: str | Sequence[str]) -> torch.Tensor:
        texts = [text] if isinstance(text, str) else list(text)
        if self.cache_size == 0:
            return torch.from_numpy(self._tokenize(texts)).long()
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            if len(self._ids) + len(missing) > self.cache_size:  # more distinct texts than it holds
                self._ids.clear()
                missing = list(dict.fromkeys(texts))
            self._ids.update(zip(missing, self._tokenize(missing)))
        return torch.from_numpy(np.stack([self._ids[t] for t in texts])).long()

    @torch.no_grad()
    def encode(self, text: str | Sequence[str]):
        tokens = self(text)
        return (None, None, [None, None, tokens]) if self.vq_interface else tokens

    def decode(self, text: Any) -> Any:
        return text

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> list[str]:
        return [""] * batch_size


class BERTEmbedder(AbstractEncoder):
    """BERT tokenizer + a transformer trained from scratch: the text encoder of the LDM
    text-to-image (LAION) and layout-to-image models.

    Args:
        n_embed: token width (the UNet's `context_dim`).
        n_layer: number of (attention, feed-forward) pairs.
        vocab_size: vocabulary size (30522 for the BERT tokenizer).
        max_seq_len: sequence length (tokenizer padding and learned positions).
        device: ignored (the module's device is used).
        use_tokenizer: take strings and tokenize them; False: take token ids [B, N].
        embedding_dropout: dropout after the embeddings.
        tokenizer_version: hub name or local directory of the tokenizer.
        tokenizer_cache_size: distinct texts whose token ids are kept (`BERTTokenizer.cache_size`).
    """

    def __init__(self, n_embed: int, n_layer: int, vocab_size: int = 30522, max_seq_len: int = 77,
                 device: Any = None, use_tokenizer: bool = True, embedding_dropout: float = 0.0,
                 tokenizer_version: str = "bert-base-uncased", tokenizer_cache_size: int = 65536):
        super().__init__()
        self.use_tknz_fn = use_tokenizer
        self.max_seq_len = max_seq_len
        if use_tokenizer:
            self.tknz_fn = BERTTokenizer(vq_interface=False, max_length=max_seq_len, version=tokenizer_version,
                                         cache_size=tokenizer_cache_size)
        self.transformer = TransformerWrapper(num_tokens=vocab_size, max_seq_len=max_seq_len,
                                              attn_layers=Encoder(dim=n_embed, depth=n_layer),
                                              emb_dropout=embedding_dropout)

    def forward(self, text: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        tokens = self.tknz_fn(text) if self.use_tknz_fn else text
        return self.transformer(tokens.to(module_device(self)), return_embeddings=True)

    def encode(self, text: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        return self(text)

    def null_condition(self, batch_size: int, device: torch.device | str | None = None):
        """The empty prompt; with token-id input, all-zero ids ([PAD] in the BERT vocabulary)."""
        if self.use_tknz_fn:
            return [""] * batch_size
        device = module_device(self) if device is None else device
        return torch.zeros(batch_size, self.max_seq_len, dtype=torch.long, device=device)

    def drop_conditions(self, cond, drop: torch.Tensor):
        if self.use_tknz_fn:
            return super().drop_conditions(cond, drop)
        return _select(drop.bool(), 0, cond)  # token ids of any length


class SpatialRescaler(AbstractEncoder):
    """Resizes a map `n_stages` times by `multiplier`, then optionally mixes its channels (1x1 conv).

    Args:
        n_stages: number of resize steps.
        method: interpolation mode of `F.interpolate`.
        multiplier: scale factor of each step.
        in_channels: channels of the input map.
        out_channels: output channels of the 1x1 conv `channel_mapper` (None: no conv).
        bias: bias of the conv.
    """

    def __init__(self, n_stages: int = 1, method: str = "bilinear", multiplier: float = 0.5, in_channels: int = 3,
                 out_channels: int | None = None, bias: bool = False):
        super().__init__()
        if n_stages < 0:
            raise ValueError(f"SpatialRescaler: n_stages must be >= 0, got {n_stages}")
        if method not in INTERPOLATION_MODES:
            raise ValueError(f"SpatialRescaler: method must be one of {', '.join(INTERPOLATION_MODES)}, got {method}")
        self.n_stages = n_stages
        self.multiplier = multiplier
        self.interpolator = partial(F.interpolate, mode=method)
        self.remap_output = out_channels is not None
        if self.remap_output:
            logger.info("SpatialRescaler maps %d to %d channels after resizing", in_channels, out_channels)
            self.channel_mapper = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.n_stages):
            x = self.interpolator(x, scale_factor=self.multiplier)
        return self.channel_mapper(x) if self.remap_output else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def drop_conditions(self, cond: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """The null map is all zeros."""
        return _select(drop.bool(), 0.0, cond)


class ReleasedCLIPTextLayout(nn.Module):
    """Holds a transformers >= 5 `CLIPTextModel` as `text_model`, so that its state-dict keys are
    `text_model.*` as in the released SD checkpoints (transformers 4.x named them so itself)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.text_model = model

    @property
    def config(self):
        return self.text_model.config

    def forward(self, *args, **kwargs):
        return self.text_model(*args, **kwargs)


def load_clip_text_model(version: str) -> nn.Module:
    """A transformers `CLIPTextModel` from a hub name or local directory.

    A local directory with a config but no weight file gives a randomly initialised model
    (the SD checkpoint carries the text encoder weights anyway).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if os.path.isdir(version) and not any(os.path.isfile(os.path.join(version, f)) for f in _WEIGHT_FILES):
        logger.warning("%s has no weight file: CLIP text model built from its config with random weights", version)
        return CLIPTextModel(_from_pretrained(CLIPTextConfig, version, "CLIP text config"))
    return _from_pretrained(CLIPTextModel, version, "CLIP text model")


def released_clip_layout(model: nn.Module) -> nn.Module:
    """`model` itself when it already has the `text_model.*` key layout (transformers 4.x), else wrapped."""
    return model if hasattr(model, "text_model") else ReleasedCLIPTextLayout(model)


class FrozenCLIPEmbedder(AbstractEncoder):
    """The frozen CLIP text encoder of Stable Diffusion (transformers' CLIPTokenizer/CLIPTextModel).

    Its state-dict keys are `transformer.text_model.*` whatever transformers version is installed
    (the released layout); loading also accepts the `transformer.*` layout of transformers 5 and
    ignores the `position_ids` buffer that older checkpoints carry.

    Args:
        version: hub name or local directory with the tokenizer and the text model.
        device: ignored (the module's device is used).
        max_length: tokens per prompt (padded / truncated).
        freeze: no gradients and eval mode (as released).
        layer: "last" (last hidden state, SD 1.x), "pooled" (EOS token, [B, 1, d]) or
            "hidden" (output of layer `layer_idx`, SD 2.x style).
        layer_idx: the hidden layer for `layer: hidden`.
    """

    LAYERS = ("last", "pooled", "hidden")

    def __init__(self, version: str = "openai/clip-vit-large-patch14", device: Any = None, max_length: int = 77,
                 freeze: bool = True, layer: str = "last", layer_idx: int | None = None):
        super().__init__()
        from transformers import CLIPTokenizer

        if layer not in self.LAYERS:
            raise ValueError(f"FrozenCLIPEmbedder: layer must be one of {', '.join(self.LAYERS)}, got {layer}")
        if layer == "hidden" and layer_idx is None:
            raise ValueError("FrozenCLIPEmbedder: layer 'hidden' needs layer_idx")
        self.tokenizer = _from_pretrained(CLIPTokenizer, version, "CLIP tokenizer")
        self.transformer = released_clip_layout(load_clip_text_model(version))
        self.max_length = max_length
        self.layer = layer
        self.layer_idx = layer_idx
        self.frozen = False
        self.register_load_state_dict_pre_hook(_accept_clip_key_layouts)
        if freeze:
            self.freeze()

    def freeze(self) -> None:
        """Eval mode and no gradients for the text model."""
        self.transformer = self.transformer.eval()
        for param in self.parameters():
            param.requires_grad = False
        self.frozen = True

    def train(self, mode: bool = True) -> FrozenCLIPEmbedder:
        super().train(mode)
        if self.frozen:
            self.transformer.eval()
        return self

    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor:
        """Token ids [B, max_length]: BOS, tokens, EOS, padding (EOS for the released tokenizer)."""
        batch_encoding = self.tokenizer(list(text) if not isinstance(text, str) else text, truncation=True,
                                        max_length=self.max_length, padding="max_length", return_tensors="pt")
        return batch_encoding["input_ids"]

    def forward(self, text: str | Sequence[str]) -> torch.Tensor:
        tokens = self.tokenize(text).to(module_device(self))
        outputs = self.transformer(input_ids=tokens, output_hidden_states=self.layer == "hidden")
        if self.layer == "last":
            return outputs.last_hidden_state
        if self.layer == "pooled":
            return outputs.pooler_output[:, None, :]
        return outputs.hidden_states[self.layer_idx]

    def encode(self, text: str | Sequence[str]) -> torch.Tensor:
        return self(text)

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> list[str]:
        return [""] * batch_size


def _accept_clip_key_layouts(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-time key fixes for FrozenCLIPEmbedder: map the transformers-5 layout
    (`transformer.embeddings...`) to the released one and drop `position_ids` when the
    installed transformers does not save it."""
    root = prefix + "transformer."
    for key in [k for k in state_dict if k.startswith(root) and not k.startswith(root + "text_model.")]:
        state_dict[root + "text_model." + key[len(root):]] = state_dict.pop(key)
    position_ids = root + "text_model.embeddings.position_ids"
    if position_ids in state_dict and "text_model.embeddings.position_ids" not in module.transformer.state_dict():
        state_dict.pop(position_ids)
