"""Which released model a state dict belongs to, from a few fingerprint keys (data table).

Each `Family` lists key -> shape requirements (`None`: any shape, only presence), keys that
must be absent, the config that builds the model, and whether this project supports it.
`detect_family` returns the matching entry with the most requirements. The three unconditional
LDM-VQ-4 models (CelebA-HQ, FFHQ, LSUN bedrooms) share one architecture and cannot be told
apart from their keys: they are one entry listing the three configs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
CLIP_TOKENS = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
CLIP_TOKENS_V5 = "cond_stage_model.transformer.embeddings.token_embedding.weight"
BERT_TOKENS = "cond_stage_model.transformer.token_emb.weight"


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    configs: tuple[str, ...] = ()
    requires: Mapping[str, tuple[int, ...] | None] = field(default_factory=dict)
    forbids: tuple[str, ...] = ()     # key prefixes that must be absent
    supported: bool = True


def _first_stage(name: str, kind: str, quant: tuple[int, ...], mid_attn: bool = True, extra=None) -> Family:
    key = "quantize.embedding.weight" if kind == "VQ" else "quant_conv.weight"
    requires = {"encoder.conv_in.weight": None, "decoder.conv_out.weight": None, key: quant}
    requires.update(extra or {})
    forbids = ("model.",) + (("quantize.",) if kind == "KL" else ()) + (() if mid_attn else ("encoder.mid.attn_1.",))
    return Family(f"first_stage/{name}", f"LDM first stage {kind} ({name})",
                  (f"models/first_stage_models/{name}/config.yaml",), requires, forbids)


def _ldm(name: str, description: str, conv_in: tuple[int, ...], extra=None, forbids=(), configs=None) -> Family:
    requires = {CONV_IN: conv_in}
    requires.update(extra or {})
    return Family(f"ldm/{name}", description, tuple(configs or (f"models/ldm/{name}/config.yaml",)),
                  requires, tuple(forbids))


FAMILIES: tuple[Family, ...] = (
    _first_stage("kl-f4", "KL", (6, 6, 1, 1)),
    _first_stage("kl-f8", "KL", (8, 8, 1, 1)),
    _first_stage("kl-f16", "KL", (32, 32, 1, 1)),
    _first_stage("kl-f32", "KL", (128, 128, 1, 1)),
    _first_stage("vq-f4", "VQ", (8192, 3), extra={"encoder.mid.attn_1.q.weight": None}),
    _first_stage("vq-f4-noattn", "VQ", (8192, 3), mid_attn=False),
    _first_stage("vq-f8", "VQ", (16384, 4)),
    _first_stage("vq-f8-n256", "VQ", (256, 4)),
    _first_stage("vq-f16", "VQ", (16384, 8)),
    _ldm("uncond-vq-f4", "LDM unconditional image synthesis, LDM-VQ-4 (CelebA-HQ, FFHQ or LSUN "
         "bedrooms: same architecture)", (224, 3, 3, 3), forbids=("cond_stage_model.",),
         configs=("models/ldm/celeba256/config.yaml", "models/ldm/ffhq256/config.yaml",
                  "models/ldm/lsun_beds256/config.yaml")),
    _ldm("lsun_churches256", "LDM unconditional image synthesis, LSUN churches, LDM-KL-8",
         (192, 4, 3, 3), extra={"scale_factor": None}, forbids=("cond_stage_model.",)),
    _ldm("cin256", "LDM class-conditional ImageNet, LDM-VQ-8", (256, 4, 3, 3),
         extra={"cond_stage_model.embedding.weight": (1000, 512)}),
    _ldm("cin256-v2", "LDM class-conditional ImageNet (v2, classifier-free guidance), LDM-VQ-4",
         (192, 3, 3, 3), extra={"cond_stage_model.embedding.weight": (1001, 512)},
         configs=("configs/latent-diffusion/cin256-v2.yaml",)),
    _ldm("text2img256", "LDM text-to-image (BERT), LDM-VQ-4", (192, 3, 3, 3),
         extra={BERT_TOKENS: (30522, 640)}),
    _ldm("txt2img-1p4B", "LDM text-to-image 1.45B (LAION-400M, BERT), LDM-KL-8", (320, 4, 3, 3),
         extra={BERT_TOKENS: (30522, 1280)}, configs=("configs/latent-diffusion/txt2img-1p4B-eval.yaml",)),
    _ldm("layout2img-openimages256", "LDM layout-to-image (OpenImages), LDM-VQ-4", (128, 3, 3, 3),
         extra={BERT_TOKENS: (8192, 512)}),
    _ldm("inpainting_big", "LDM inpainting (concat, LDM-VQ-4 noattn)", (256, 7, 3, 3)),
    _ldm("semantic_synthesis256", "LDM semantic image synthesis (landscapes), LDM-VQ-4", (128, 6, 3, 3),
         extra={"cond_stage_model.channel_mapper.weight": (3, 182, 1, 1)},
         configs=("models/ldm/semantic_synthesis256/config.yaml", "models/ldm/semantic_synthesis512/config.yaml")),
    _ldm("bsr_sr", "LDM super-resolution (BSR degradation), LDM-VQ-4", (160, 6, 3, 3),
         forbids=("cond_stage_model.",)),
    Family("sd-v1", "Stable Diffusion v1.x (text-to-image, CLIP ViT-L/14)",
           ("configs/stable-diffusion/v1-inference.yaml",),
           {CONV_IN: (320, 4, 3, 3), CLIP_TOKENS: (49408, 768)}),
    Family("sd-v1", "Stable Diffusion v1.x (text-to-image, CLIP ViT-L/14; transformers-5 key layout)",
           ("configs/stable-diffusion/v1-inference.yaml",),
           {CONV_IN: (320, 4, 3, 3), CLIP_TOKENS_V5: (49408, 768)}),
    Family("sd-v1-inpainting", "Stable Diffusion v1.x inpainting (9-channel conv_in)",
           ("configs/stable-diffusion/v1-inpainting-inference.yaml",),
           {CONV_IN: (320, 9, 3, 3), CLIP_TOKENS: (49408, 768)}),
    Family("sd-v1-instruct", "Stable Diffusion v1.x with an 8-channel conv_in (InstructPix2Pix-style)",
           (), {CONV_IN: (320, 8, 3, 3)}, supported=False),
    Family("sd-v2", "Stable Diffusion 2.x (OpenCLIP ViT-H text encoder)", (),
           {"cond_stage_model.model.token_embedding.weight": None}, supported=False),
    Family("sdxl", "Stable Diffusion XL", (), {"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": None},
           supported=False),
    Family("sdxl", "Stable Diffusion XL", (), {"conditioner.embedders.1.model.token_embedding": None}, supported=False),
)


def _matches(family: Family, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    for key, shape in family.requires.items():
        if key not in shapes or (shape is not None and tuple(shapes[key]) != tuple(shape)):
            return False
    return not any(k.startswith(family.forbids) for k in shapes) if family.forbids else True


def detect_family(state_dict: Mapping[str, object]) -> Family | None:
    """The best-matching `Family` for a state dict (tensors or shapes as values), or None."""
    shapes = {k: tuple(getattr(v, "shape", v) or ()) for k, v in state_dict.items()}
    candidates = [f for f in FAMILIES if _matches(f, shapes)]
    if not candidates:
        return None
    return max(candidates, key=lambda f: len(f.requires))


def has_ema(state_dict: Mapping[str, object]) -> bool:
    return any(k.startswith("model_ema.") and k not in ("model_ema.decay", "model_ema.num_updates")
               for k in state_dict)


def describe_family(state_dict: Mapping[str, object]) -> str:
    """One phrase for messages: `LDM first stage KL (kl-f8) (config models/...)`."""
    family = detect_family(state_dict)
    if family is None:
        tops = sorted({k.split(".")[0] for k in state_dict})[:6]
        return f"an unknown model (top-level keys: {', '.join(tops)})"
    text = family.description
    if not family.supported:
        return text + " (not supported by this project)"
    if family.configs:
        text += f" (config {' or '.join(family.configs)})"
    return text
