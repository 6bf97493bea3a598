#!/usr/bin/env python
"""Layout-to-image synthesis with the `layout2img` LDM layout: object boxes and classes become
the token sequence of taming's bounding-box builder, encoded by the model's transformer and fed
by cross-attention (Rombach et al. 2022, Sec. 4.3.1).

    python scripts/layout2img.py --layout scene.json --outdir outputs/layout2img

The JSON file holds `{"objects": [{"class": 12 or "Dog", "bbox": [x0, y0, w, h]}, ...]}` with
boxes relative to the image (in [0, 1]); class names need `"class_names": [...]` in the file or
--class-names (one name per line, line k = class k). `"num_classes"` (default: the number of
names, else 601 as the OpenImages model) sets the token layout. Writes `OUTDIR/samples/NNNNN.png`
and a grid without overwriting anything.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ldm import sampling_utils as su  # noqa: E402

OPENIMAGES_CLASSES = 601


def build_parser() -> su.ArgumentParser:
    p = su.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", required=True, help="JSON file with the objects (see above)")
    p.add_argument("--class-names", dest="class_names", default=None, help="text file of class names")
    p.add_argument("--n_samples", type=int, default=4, help="samples of the layout")
    su.add_output_args(p, "outputs/layout2img-samples")
    su.add_sampling_args(p, steps=100, eta=1.0, scale=1.0)
    su.add_model_args(p, "models/ldm/layout2img-openimages256/config.yaml",
                      "models/ldm/layout2img-openimages256/model.ckpt")
    return p


def read_layout(path: str, names_file: str | None) -> tuple[list, int]:
    """(annotations, number of classes) from the JSON layout."""
    from ldm.data.layout import Annotation

    if not os.path.isfile(path):
        raise su.ScriptError(f"layout file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except json.JSONDecodeError as err:
        raise su.ScriptError(f"layout file {path} is not valid JSON ({err})") from err
    names = spec.get("class_names") if isinstance(spec, dict) else None
    if names_file:
        with open(names_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    objects = spec.get("objects") if isinstance(spec, dict) else None
    if not objects:
        raise su.ScriptError(f"layout file {path} has no 'objects'")
    n_classes = int(spec.get("num_classes", len(names) if names else OPENIMAGES_CLASSES))
    annotations = []
    for k, obj in enumerate(objects):
        label, bbox = obj.get("class"), obj.get("bbox")
        if isinstance(label, str):
            if not names or label not in names:
                raise su.ScriptError(f"object {k}: unknown class name '{label}' (give class_names)")
            label = names.index(label)
        if not isinstance(label, int) or not 0 <= label < n_classes:
            raise su.ScriptError(f"object {k}: class must be a name or an integer in [0, {n_classes})")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise su.ScriptError(f"object {k}: bbox must be [x0, y0, w, h]")
        x0, y0, w, h = map(float, bbox)
        if w <= 0 or h <= 0 or x0 < 0 or y0 < 0 or x0 + w > 1 + 1e-6 or y0 + h > 1 + 1e-6:
            raise su.ScriptError(f"object {k}: bbox {bbox} must lie in [0, 1] with positive width and height")
        annotations.append(Annotation(bbox=(x0, y0, w, h), category_no=label,
                                      is_group_of=bool(obj.get("group_of", False))))
    return annotations, n_classes


def layout_tokens(model, annotations: list, n_classes: int) -> torch.Tensor:
    """[1, L] token ids for the model's sequence length L = 3 * objects + 2 and vocabulary."""
    from ldm.data.layout import ObjectsBoundingBoxConditionalBuilder

    encoder = model.cond_stage_model
    seq_len = int(getattr(encoder, "max_seq_len", 92))
    vocab = int(encoder.transformer.token_emb.num_embeddings) if hasattr(encoder, "transformer") else 8192
    if (seq_len - 2) % 3:
        raise su.ScriptError(f"the model's sequence length {seq_len} is not 3 * objects + 2 (not a layout model)")
    max_objects = (seq_len - 2) // 3
    if len(annotations) > max_objects:
        raise su.ScriptError(f"{len(annotations)} objects, but the model takes at most {max_objects}")
    builder = ObjectsBoundingBoxConditionalBuilder(n_classes, no_max_objects=max_objects, no_tokens=vocab,
                                                   encode_crop=True)
    tokens, _ = builder.build(annotations)
    return torch.tensor([tokens], dtype=torch.long)


def main(argv=None) -> list[Path]:
    opt = build_parser().parse_args(argv)
    name = su.checked_sampler_name(opt)
    if opt.n_samples < 1:
        raise su.ScriptError("--n_samples must be at least 1")
    annotations, n_classes = read_layout(opt.layout, opt.class_names)
    device, model = su.load_model_from_args(opt)
    if model.cond_stage_key != "coordinates_bbox":
        raise su.ScriptError(f"{opt.config} is not a layout-to-image model (cond_stage_key coordinates_bbox)")
    tokens = layout_tokens(model, annotations, n_classes).to(device)
    su.seed_everything(opt.seed)
    sampler = su.make_sampler(model, name)
    shape = (model.channels, model.image_size, model.image_size)
    samples_dir = su.NumberedFolder(Path(opt.outdir) / "samples")
    with torch.no_grad(), su.precision_scope(opt.precision, device), su.ema_scope(model):
        n = opt.n_samples
        c = model.get_learned_conditioning(tokens.expand(n, -1))
        uc = model.get_unconditional_conditioning(n) if opt.scale != 1.0 else None
        z, _ = sampler.sample(S=opt.ddim_steps, batch_size=n, shape=shape, conditioning=c, eta=opt.ddim_eta,
                              unconditional_guidance_scale=opt.scale, unconditional_conditioning=uc, verbose=True)
        images = su.to_unit_range(model.decode_first_stage(z)).cpu()
    return su.save_samples(images, samples_dir, opt, nrow=n)


if __name__ == "__main__":
    sys.exit(su.run_script(main))
