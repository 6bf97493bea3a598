"""Data sets: every sample is a dict with `image` (HWC float32 in [-1, 1]) plus task keys.

- `scenes`: the built-in procedurally drawn scenes (captions, labels, boxes, masks, segmentation).
- `folder`: your own data (image folder, captioned folder, CSV/JSONL list, class folders).
- `webdataset`: LAION-style tar shards, streamed and split across ranks and workers.
- `faceshq`, `lsun`, `imagenet`, `openimages`, `coco`, `places`: the paper's data sets in their layouts.
- `superres` + `degradations`: super-resolution pairs (bsrgan, bsrgan_light, pil_*/cv_* resizes).
- `inpainting` + `masks`: LaMa-style masks on any data set; `layout`: objects-bbox tokens;
  `semantic`, `landscapes`: label-map pairs; `base`: loading and robustness helpers.
"""
