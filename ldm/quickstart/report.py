"""The quickstart's report: `report.md`, `report.json` and a PNG grid of prompts and samples.

`report.json` is the machine-readable record (every figure of the Markdown, nothing else);
`write_report` writes all three files from one results dict, so the Markdown cannot disagree
with the JSON. The grid shows, per row, the prompt, a real validation scene with that caption
and the samples without and with guidance, each marked by the judge (green: all attributes
right, red: not).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPORT_VERSION = 1


@dataclass
class GridRow:
    """One row of the grid: a prompt, then labelled uint8 HWC images, each with a judge mark
    (True: right, False: wrong, None: not judged)."""

    prompt: str
    images: Sequence[np.ndarray]
    marks: Sequence[bool | None]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def make_grid(rows: Sequence[GridRow], headers: Sequence[str], cell: int = 96, text_width: int = 300) -> Image.Image:
    """A white PNG: a header line, then one row per prompt with its images scaled to `cell`."""
    font = ImageFont.load_default()
    n_images = max((len(r.images) for r in rows), default=0)
    pad, header_h = 6, 18
    width = text_width + n_images * (cell + pad) + pad
    height = header_h + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(headers):
        draw.text((text_width + j * (cell + pad) + pad, 3), title, fill="black", font=font)
    for i, row in enumerate(rows):
        top = header_h + i * (cell + pad) + pad
        words, lines, line = row.prompt.split(), [], ""
        for word in words:  # wrap the prompt to the text column
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=font) > text_width - 2 * pad and line:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
        for k, text in enumerate(lines[: cell // 12]):
            draw.text((pad, top + 4 + 12 * k), text, fill="black", font=font)
        for j, (image, mark) in enumerate(zip(row.images, row.marks)):
            left = text_width + j * (cell + pad) + pad
            tile = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (left, top))
            if mark is not None:
                color = (30, 170, 60) if mark else (210, 30, 30)
                draw.rectangle([left - 2, top - 2, left + cell + 1, top + cell + 1], outline=color, width=2)
    return canvas


def _accuracy_rows(judged: Mapping[str, Mapping[str, float]]) -> list[str]:
    kinds = ("count", "color", "shape", "relation")
    lines = ["| samples | n | caption accuracy | attribute accuracy | " + " | ".join(kinds) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in kinds) + " |"]
    for name, s in judged.items():
        lines.append(f"| {name} | {int(s.get('n', 0))} | **{_pct(s.get('caption_accuracy'))}** | "
                     f"{_pct(s.get('attribute_accuracy'))} | "
                     + " | ".join(_pct(s.get(f"{k}_accuracy")) for k in kinds) + " |")
    return lines


def render_markdown(results: Mapping[str, Any], grid_name: str | None = None,
                    inpaint_grid_name: str | None = None) -> str:
    """The Markdown text of the report."""
    r = results
    setup, ae, ldm = r.get("setup", {}), r.get("autoencoder", {}), r.get("diffusion", {})
    lines = ["# Quickstart report", ""]
    lines += [f"Mode: **{r.get('mode', 'full')}** · device: {setup.get('device', '?')} · "
              f"{setup.get('cpu_count', '?')} CPU cores ({setup.get('torch_threads', '?')} torch thread(s) per "
              f"process; {setup.get('cores_busy_at_start', '?')} cores busy with other work at start) · "
              f"training precision {setup.get('precision', '32')} · "
              f"torch {setup.get('torch', '?')} · "
              f"finished {r.get('finished', '?')}", ""]
    lines += ["## Timings", "", "| stage | seconds |", "| --- | --- |"]
    for stage, seconds in r.get("timings", {}).items():
        lines.append(f"| {stage} | {_fmt(float(seconds), 1)} |")
    lines += [""]
    lines += ["## Autoencoder (first stage)", "",
              f"KL-regularised, f = {ae.get('f', '?')}: images {ae.get('image_shape', '?')} -> latents "
              f"**{ae.get('latent_shape', '?')}** ({ae.get('steps', '?')} training steps).", "",
              f"Reconstruction on {ae.get('n_eval', '?')} validation scenes: "
              f"PSNR **{_fmt(ae.get('psnr'), 2)} dB**, SSIM **{_fmt(ae.get('ssim'), 4)}**.", ""]
    lines += ["## Text-to-image latent diffusion", "",
              f"{ldm.get('steps', '?')} training steps"
              + (f" (time budget {ldm['time_budget_min']:g} min)" if ldm.get("time_budget_min") else "")
              + f", {_fmt(ldm.get('unet_params_m'), 2)}M UNet parameters, "
              f"{_fmt(ldm.get('text_params_m'), 2)}M text-encoder parameters, scale_factor "
              f"{_fmt(ldm.get('scale_factor'), 4)}; sampler: {ldm.get('sampler', '?')}.", ""]
    judge_real = r.get("judge_on_real", {})
    lines += ["## Judge", "",
              "A rule-based reader of each object's colour and shape and of the spatial relation "
              "(`ldm.quickstart.judge`). On real rendered validation scenes it scores "
              f"**{_pct(judge_real.get('caption_accuracy'))}** caption accuracy "
              f"({int(judge_real.get('n', 0))} scenes).", "",
              "Held-out captions (never seen in training), one sample each:", ""]
    lines += _accuracy_rows(r.get("judge", {}))
    if r.get("advice"):
        lines += ["", f"**Note:** {r['advice']}"]
    if r.get("judge_on_reconstructions"):
        lines += ["", "The first stage's ceiling: the judge on autoencoder reconstructions of the real scenes "
                  "with the same captions:", ""]
        lines += _accuracy_rows({"autoencoder reconstructions": r["judge_on_reconstructions"]})
    lines += ["", "Caption accuracy: all attributes of the caption right (number of objects, each "
              "object's colour and shape, each relation); attribute accuracy: over all attributes.", ""]
    if grid_name:
        lines += [f"![prompts and samples]({grid_name})", ""]
    fid = r.get("fid", {})
    if fid:
        lines += ["## FID and precision/recall", "",
                  f"Against {fid.get('n_reference', '?')} real validation scenes, in the feature space of a "
                  f"small network trained on the scenes (`ldm.quickstart.features`, "
                  f"{fid.get('feature_dim', '?')}-d, {fid.get('feature_network_source', 'trained in this run')}; "
                  "not comparable with Inception FIDs).", "",
                  "| samples | FID | precision | recall |", "| --- | --- | --- | --- |"]
        for name, s in fid.get("samples", {}).items():
            lines.append(f"| {name} | {_fmt(s.get('fid'), 2)} | {_fmt(s.get('precision'))} | {_fmt(s.get('recall'))} |")
        lines += [""]
        if "other real scenes" in fid.get("samples", {}):
            lines += ["\"other real scenes\" are as many further real validation scenes: the FID that real "
                      "images get at this sample size, the floor to read the others against.", ""]
    inpaint = r.get("inpainting", {})
    if inpaint:
        lines += ["## Inpainting", "",
                  f"{inpaint.get('method', '')}. On {int(inpaint.get('n', 0))} held-out scenes: judge caption "
                  f"accuracy **{_pct(inpaint.get('caption_accuracy'))}**, attribute accuracy "
                  f"{_pct(inpaint.get('attribute_accuracy'))}; PSNR to the original inside the hole "
                  f"{_fmt(inpaint.get('psnr_in_hole'), 2)} dB.", ""]
        if inpaint_grid_name:
            lines += [f"![inpainting]({inpaint_grid_name})", ""]
    lines += ["## Files", ""]
    for name, path in r.get("files", {}).items():
        lines.append(f"- {name}: `{path}`")
    return "\n".join(lines) + "\n"


def write_report(outdir: str | Path, results: dict[str, Any], grid: Image.Image | None = None,
                 inpaint_grid: Image.Image | None = None) -> dict[str, Path]:
    """Write report.md, report.json and the grids into `outdir`; returns their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": outdir / "report.md", "json": outdir / "report.json"}
    if grid is not None:
        paths["grid"] = outdir / "samples_grid.png"
        grid.save(paths["grid"])
    if inpaint_grid is not None:
        paths["inpaint_grid"] = outdir / "inpainting_grid.png"
        inpaint_grid.save(paths["inpaint_grid"])
    results = dict(results, version=REPORT_VERSION)
    results.setdefault("files", {}).update({k: str(v) for k, v in paths.items()})
    paths["markdown"].write_text(render_markdown(results, paths.get("grid") and paths["grid"].name,
                                                 paths.get("inpaint_grid") and paths["inpaint_grid"].name),
                                 encoding="utf-8")
    paths["json"].write_text(json.dumps(results, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
