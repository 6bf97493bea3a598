#!/usr/bin/env bash
# Download the pretrained LDMs of the paper (CompVis), and on request Stable Diffusion v1.x.
#   bash scripts/download_models.sh                    # every LDM below (not SD)
#   bash scripts/download_models.sh cin256 bsr_sr      # some
#   HF_TOKEN=hf_... bash scripts/download_models.sh sd-v1-4
# LDMs land in models/ldm/<name>/model.ckpt next to config.yaml. The Stable Diffusion v1.1-1.4
# files are gated on Hugging Face: you need an account, must accept the CreativeML OpenRAIL-M
# licence on the model page, and pass an access token in HF_TOKEN. They land in
# models/ldm/stable-diffusion-v1/ and load with configs/stable-diffusion/v1-inference.yaml
# (inpainting: v1-inpainting-inference.yaml). Downloads resume; hashes: models/checkpoints.json.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/download_lib.sh

LDMS=(
    "celeba256 https://ommer-lab.com/files/latent-diffusion/celeba.zip"
    "ffhq256 https://ommer-lab.com/files/latent-diffusion/ffhq.zip"
    "lsun_churches256 https://ommer-lab.com/files/latent-diffusion/lsun_churches.zip"
    "lsun_beds256 https://ommer-lab.com/files/latent-diffusion/lsun_bedrooms.zip"
    "text2img256 https://ommer-lab.com/files/latent-diffusion/text2img.zip"
    "cin256 https://ommer-lab.com/files/latent-diffusion/cin.zip"
    "semantic_synthesis512 https://ommer-lab.com/files/latent-diffusion/semantic_synthesis.zip"
    "semantic_synthesis256 https://ommer-lab.com/files/latent-diffusion/semantic_synthesis256.zip"
    "bsr_sr https://ommer-lab.com/files/latent-diffusion/sr_bsr.zip"
    "layout2img-openimages256 https://ommer-lab.com/files/latent-diffusion/layout2img_model.zip"
    "inpainting_big https://ommer-lab.com/files/latent-diffusion/inpainting_big.zip"
    "cin256-v2 https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt"
    "txt2img-1p4B https://ommer-lab.com/files/latent-diffusion/nitro/txt2img-f8-large/model.ckpt"
)
# Gated (Hugging Face login + licence): only downloaded when named.
STABLE_DIFFUSION=(
    "sd-v1-1 https://huggingface.co/CompVis/stable-diffusion-v-1-1-original/resolve/main/sd-v1-1.ckpt"
    "sd-v1-1-full-ema https://huggingface.co/CompVis/stable-diffusion-v-1-1-original/resolve/main/sd-v1-1-full-ema.ckpt"
    "sd-v1-2 https://huggingface.co/CompVis/stable-diffusion-v-1-2-original/resolve/main/sd-v1-2.ckpt"
    "sd-v1-2-full-ema https://huggingface.co/CompVis/stable-diffusion-v-1-2-original/resolve/main/sd-v1-2-full-ema.ckpt"
    "sd-v1-3 https://huggingface.co/CompVis/stable-diffusion-v-1-3-original/resolve/main/sd-v1-3.ckpt"
    "sd-v1-3-full-ema https://huggingface.co/CompVis/stable-diffusion-v-1-3-original/resolve/main/sd-v1-3-full-ema.ckpt"
    "sd-v1-4 https://huggingface.co/CompVis/stable-diffusion-v-1-4-original/resolve/main/sd-v1-4.ckpt"
    "sd-v1-4-full-ema https://huggingface.co/CompVis/stable-diffusion-v-1-4-original/resolve/main/sd-v1-4-full-ema.ckpt"
    "sd-v1-5 https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.ckpt"
    "sd-v1-5-full https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned.ckpt"
    "sd-v1-5-inpainting https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting/resolve/main/sd-v1-5-inpainting.ckpt"
)

if [ $# -eq 0 ]; then
    echo "Stable Diffusion v1.x is not downloaded by default: name it (e.g. sd-v1-4) after accepting its licence on Hugging Face and setting HF_TOKEN."
    fetch_selected "${LDMS[@]}" --
else
    fetch_selected "${LDMS[@]}" "${STABLE_DIFFUSION[@]}" -- "$@"
fi
