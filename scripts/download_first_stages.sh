#!/usr/bin/env bash
# Download and unpack the pretrained first-stage autoencoders of the LDM paper (CompVis).
#   bash scripts/download_first_stages.sh              # all of them
#   bash scripts/download_first_stages.sh kl-f8 vq-f4  # some
# Each lands in models/first_stage_models/<name>/model.ckpt next to its config.yaml.
# Downloads resume (curl -C - / wget -c); hashes are checked against models/checkpoints.json.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/download_lib.sh

FIRST_STAGES=(
    "kl-f4 https://ommer-lab.com/files/latent-diffusion/kl-f4.zip"
    "kl-f8 https://ommer-lab.com/files/latent-diffusion/kl-f8.zip"
    "kl-f16 https://ommer-lab.com/files/latent-diffusion/kl-f16.zip"
    "kl-f32 https://ommer-lab.com/files/latent-diffusion/kl-f32.zip"
    "vq-f4 https://ommer-lab.com/files/latent-diffusion/vq-f4.zip"
    "vq-f4-noattn https://ommer-lab.com/files/latent-diffusion/vq-f4-noattn.zip"
    "vq-f8 https://ommer-lab.com/files/latent-diffusion/vq-f8.zip"
    "vq-f8-n256 https://ommer-lab.com/files/latent-diffusion/vq-f8-n256.zip"
    "vq-f16 https://ommer-lab.com/files/latent-diffusion/vq-f16.zip"
)

fetch_selected "${FIRST_STAGES[@]}" -- "$@"
